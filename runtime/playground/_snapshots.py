"""Stored snapshots, and their replays run by the module's own workers.

The list comes from the manifest store's ``snapshots`` stream (followed from its end, like the
audit trail); a replay, a diff of two replays, or a hook played back is asked of a live worker
of the snapshot's module through its sandbox service (see :mod:`runtime.worker._replay`), with
the playground's role in the forwarded principal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

from runtime.errors import Unavailable
from runtime.identity import PRINCIPAL_HEADER, Peer, Principal, principal_header
from runtime.lcc import LogSnapshotStore, Snapshot
from runtime.observability import LogTail
from runtime.status import RpcStatus, error_of
from runtime.tls import InternalTls
from runtime.wire import SANDBOX_SERVICE

__all__ = ["Snapshots", "summary"]

SANDBOX_TIMEOUT = 60.0
WORKER_STALE_SECONDS = 10.0


def _request_id(record: Mapping[str, Any]) -> str:
    meta = record.get("meta")
    return str(meta.get("request_id", "")) if isinstance(meta, Mapping) else ""


def summary(snapshot_id: int | str, record: Mapping[str, Any]) -> dict[str, Any]:
    """What the list shows of one stored snapshot."""
    meta = record.get("meta") if isinstance(record.get("meta"), Mapping) else {}
    assert isinstance(meta, Mapping)
    events = [e for e in record.get("events") or () if isinstance(e, Mapping)]
    started = next((e.get("at") for e in events if e.get("kind") == "lifecycle_start"), None)
    end = next((e for e in reversed(events) if e.get("kind") == "lifecycle_end"), None)
    return {
        "id": str(snapshot_id),
        "handler": meta.get("handler"),
        "version": record.get("version"),
        "request_id": meta.get("request_id"),
        "at": started,
        "status": None if end is None else ("ERROR" if end.get("error") else "OK"),
        "error": None if end is None else end.get("error"),
        "effects": len(record.get("effects") or ()),
        "events": len(events),
    }


class Snapshots:
    """Listing, loading and replaying snapshots. Create and use it on one event loop."""

    def __init__(self, store: Any, *, role: str, tls: InternalTls | None = None, capacity: int = 500) -> None:
        self._store = store
        self._role = role
        self._tls = tls
        """The gateway's identity: workers take replays from the gateway only, over mutual TLS."""
        self._tail = LogTail(store=store, stream="snapshots", capacity=capacity, request_id_of=_request_id)
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def recent(self, handler: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        await self._tail.poll()
        out = []
        for seq, record in self._tail.entries(self._tail.capacity):
            row = summary(seq, record)
            if handler is None or row["handler"] == handler:
                out.append(row)
                if len(out) >= limit:
                    break
        return out

    async def load(self, snapshot_id: str) -> dict[str, Any]:
        snapshot: Snapshot = await LogSnapshotStore(self._store).load(snapshot_id)
        return {"id": snapshot_id, **snapshot.to_json()}

    async def replay(self, snapshot_id: str, versions: Sequence[str], *, live: bool, subject: str) -> dict[str, Any]:
        """One replay, or two and their diff, run by a worker of the snapshot's module."""
        module = await self._module_of(snapshot_id)
        if len(versions) == 1:
            body = {"snapshot": snapshot_id, "version": versions[0], "live": live}
            return {"replays": [await self._ask(module, "Replay", body, subject)], "diff": None}
        body = {"snapshot": snapshot_id, "first": versions[0], "second": versions[1], "live": live}
        answer = await self._ask(module, "Diff", body, subject)
        return {"replays": [answer["first"], answer["second"]], "diff": answer["diff"]}

    async def play_hook(self, snapshot_id: str, hook: str, *, subject: str) -> dict[str, Any]:
        module = await self._module_of(snapshot_id)
        return await self._ask(module, "PlayHook", {"snapshot": snapshot_id, "hook": hook}, subject)

    async def _module_of(self, snapshot_id: str) -> str:
        snapshot = await LogSnapshotStore(self._store).load(snapshot_id)
        return snapshot.handler.partition(".")[0]

    async def _ask(self, module: str, method: str, body: dict[str, Any], subject: str) -> dict[str, Any]:
        now = time.time()
        workers = [
            w for w in await self._store.list_workers(module)
            if w.healthy and now - w.last_seen <= WORKER_STALE_SECONDS
        ]  # fmt: skip
        if not workers:
            raise Unavailable(f"no live worker of {module} is registered to run the replay")
        channel = self._channel(workers[0].address, module)
        principal = Principal(subject=subject, roles=(self._role,), method="internal")
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            f"/{SANDBOX_SERVICE}/{method}", request_serializer=None, response_deserializer=None
        )
        try:
            answer = await call(
                json.dumps(body).encode(),
                metadata=((PRINCIPAL_HEADER, principal_header(principal)),),
                timeout=SANDBOX_TIMEOUT,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise Unavailable(
                    f"the worker of {module} at {workers[0].address} has no sandbox: its playground is off"
                ) from error
            raise error_of(RpcStatus(error.code(), error.details() or "", ()), relay=False) from error
        data = json.loads(answer)
        assert isinstance(data, dict)
        return data

    def _channel(self, address: str, module: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            tls = self._tls
            if tls is None:
                raise Unavailable("replays need the gateway's certificate: workers take mutual TLS only")
            channel = self._channels[address] = grpc.aio.secure_channel(
                address, tls.channel_credentials(), options=tls.channel_options(Peer.module(module))
            )
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()
