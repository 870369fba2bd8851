"""Replaying stored snapshots inside the worker that owns the module (SPEC §3, Properties 37, 45).

A replay must run where the module's code and state are: in this process, not in whoever asks.
The playground asks over gRPC, on the worker's own port, through one small service
(:data:`SANDBOX_SERVICE`) whose messages are JSON; it is registered only when the playground is
on, and answers only a principal holding the playground's role, named by the gateway (whose
certificate the call carries: the playground runs in the gateway's process), as on every other
call on this port.

A replay is sandboxed. It runs the snapshot's request through this worker's real lifecycle
(hooks, validation, handler), but in a ``gctx`` whose module calls are answered from the
snapshot's recorded effects and whose publishes are captured instead of sent, so by default it
writes nothing to any other module. ``live`` lifts that: the calls and publishes then go out.

Versions: the snapshot's request is in the shape of the version it was served at; it is
transformed forward to the version this worker serves, handled, and the response is transformed
backward to the version asked for, as a caller pinned to that version would get it. The
transformer steps appear in the replay's trace, so two replays' traces show where they differ.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc
from pydantic import TypeAdapter

from runtime.context import MethodTarget, current_principal, current_request_id
from runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    ModrpcError,
    NotFound,
    PermissionDenied,
    status_of,
)
from runtime.identity import PRINCIPAL_HEADER, principal_from_header
from runtime.lcc import (
    LifecycleCall,
    LocalContext,
    ReplayResult,
    Snapshot,
    SnapshotStore,
    diff_replays,
    replay,
    replay_meta,
    run_captured,
    run_hook,
    to_jsonable,
)
from runtime.status import RpcStatus, error_of
from runtime.tls import peer_of_grpc
from runtime.versions import run_chain
from runtime.wire import SANDBOX_SERVICE

if TYPE_CHECKING:
    from runtime.fabric import Fabric
    from runtime.worker._endpoint import MethodEndpoint
    from runtime.worker._service import ModuleService

__all__ = ["Sandbox", "sandbox_handler"]

log = logging.getLogger("modrpc.worker")

class _RecordedCalls:
    """Module calls answered from a snapshot's recorded effects, in the order they were made.

    The n-th call to ``users.GetUser`` gets the n-th recorded answer of ``users.GetUser``: the
    response it got, or the same status. A call the recorded request never made is refused with
    FAILED_PRECONDITION: answering it would mean making it, which a sandboxed replay does not.
    """

    def __init__(self, effects: Sequence[Mapping[str, Any]]) -> None:
        self._queues: dict[str, list[Mapping[str, Any]]] = {}
        for effect in effects:
            if effect.get("kind") == "module_call":
                self._queues.setdefault(str(effect["target"]), []).append(effect)

    async def __call__(self, target: MethodTarget, request: Any) -> Any:
        handler_id = f"{target.module}.{target.method}"
        queue = self._queues.get(handler_id)
        if not queue:
            raise FailedPrecondition(
                f"replay: the recorded request made no further call to {handler_id}, so there is "
                "no recorded answer for it; replay with live calls to let it reach the module"
            )
        effect = queue.pop(0)
        status = str(effect.get("status", "OK"))
        if status != "OK":
            code = getattr(grpc.StatusCode, status, grpc.StatusCode.UNKNOWN)
            raise error_of(RpcStatus(code, str(effect.get("message") or status), ()), relay=False)
        return TypeAdapter(target.response_type).validate_python(effect.get("response"))


    async def stream(self, target: MethodTarget, requests: AsyncIterable[Any]) -> AsyncIterator[Any]:
        """Streaming calls are not recorded (a stream has no one answer to give back)."""
        raise FailedPrecondition(
            f"replay: streaming calls to {target.module}.{target.method} are not recorded; "
            "replay with live calls to let it reach the module"
        )
        yield  # never reached: makes this an async generator, as the protocol's stream is


class _CapturedFabric:
    """A fabric that keeps what is published instead of sending it (a sandboxed replay's)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, data: bytes, **options: Any) -> None:
        self.published.append((topic, data))


class Sandbox:
    """Replays and hook playback for the modules of one worker."""

    def __init__(self, services: Mapping[str, ModuleService], snapshots: SnapshotStore, *, hop_timeout: float = 0.25) -> None:
        self._services = services
        self._snapshots = snapshots
        self._hop_timeout = hop_timeout

    async def _load(self, snapshot_id: str) -> tuple[Snapshot, MethodEndpoint]:
        snapshot = await self._snapshots.load(snapshot_id)
        module, _, method = snapshot.handler.partition(".")
        service = self._services.get(module)
        if service is None:
            raise InvalidArgument(
                f"snapshot {snapshot_id} is of {snapshot.handler}; this worker serves "
                f"{', '.join(sorted(self._services))}, so ask a worker of {module}"
            )
        endpoint = service.endpoints.get(method)
        if endpoint is None:
            raise NotFound(f"{module} no longer has a method {method} (snapshot {snapshot_id})")
        return snapshot, endpoint

    async def replay(self, snapshot_id: str, version: str, *, live: bool = False) -> dict[str, Any]:
        """Replay one stored snapshot at ``version`` (a version id or anything that resolves)."""
        snapshot, endpoint = await self._load(snapshot_id)
        resolved = endpoint.catalog.resolve(version)
        captured: dict[str, Any] = {}
        run = self._runner(snapshot, endpoint, live=live, out=captured)
        result = await replay(snapshot, run, resolved)
        return {
            "snapshot": snapshot_id,
            "handler": snapshot.handler,
            "recorded_version": snapshot.version,
            "served_version": endpoint.served,
            "live": live,
            **result.to_json(),
            **captured,
        }

    def _runner(
        self, snapshot: Snapshot, endpoint: MethodEndpoint, *, live: bool, out: dict[str, Any]
    ) -> Callable[[Any, str], Awaitable[ReplayResult]]:
        catalog, method, served = endpoint.catalog, endpoint.method, endpoint.served

        def steps(old: str, new: str) -> list[Any]:
            chain = catalog.chain(old, new)
            if chain is None:
                raise FailedPrecondition(
                    f"no transformer chain leads from {catalog.module} {old} to {new}, the version "
                    "this worker serves: replay it on a worker that serves it"
                )
            return chain

        async def run(request: Any, version: str) -> ReplayResult:
            before: list[tuple[str, str]] = []
            after: list[tuple[str, str]] = []
            try:
                if snapshot.version != served:
                    forward = steps(snapshot.version, served)
                    request = await run_chain(forward, method, request, direction="forward", hop_timeout=self._hop_timeout)
                    before = [("transform", f"{s.name} forward {method}") for s in forward if method in s.forward]
                backward = steps(version, served) if version != served else []
            except (ModrpcError, TimeoutError) as exc:
                return ReplayResult.failed(version, exc)
            meta = replay_meta(snapshot, version)
            lctx = LocalContext(meta, redact=endpoint.redact)
            fabric = _CapturedFabric()
            gctx = endpoint.gctx if live else endpoint.gctx.sandboxed(
                _RecordedCalls(snapshot.effects), cast("Fabric", fabric)
            )
            token = current_request_id.set(meta.request_id)
            # A live replay's module calls go out for the recorded caller, as the original did
            # (the callee checks that caller's roles); the playground's role only let it start.
            acting_for = current_principal.set(meta.principal)
            try:
                result = await run_captured(
                    LifecycleCall(
                        handler=endpoint._run_handler,
                        request=request,
                        lctx=lctx,
                        gctx=gctx,
                        hooks=endpoint.hooks,
                        validate_request=endpoint.validate_request,
                        validate_response=endpoint.validate_response,
                    )
                )
            finally:
                current_request_id.reset(token)
                current_principal.reset(acting_for)
            out["events"] = [event.to_json() for event in lctx.events]
            out["effects"] = list(lctx.effects)
            out["request_id"] = meta.request_id
            if result.ok and backward:
                try:
                    response = await run_chain(
                        backward, method, result.response, direction="backward", hop_timeout=self._hop_timeout
                    )
                except (ModrpcError, TimeoutError) as exc:
                    return ReplayResult.failed(version, exc, lctx.events)
                result = dataclasses.replace(result, response=to_jsonable(response))
                after = [("transform", f"{s.name} backward {method}") for s in reversed(backward) if method in s.backward]
            return dataclasses.replace(result, trace=(*before, *result.trace, *after))

        return run

    async def diff(self, snapshot_id: str, first: str, second: str, *, live: bool = False) -> dict[str, Any]:
        """Replay at two versions and compare them (Property 46)."""
        a = await self.replay(snapshot_id, first, live=live)
        b = await self.replay(snapshot_id, second, live=live)
        diff = diff_replays(ReplayResult.from_json(a), ReplayResult.from_json(b))
        return {"first": a, "second": b, "diff": diff_json(diff)}

    async def play_hook(self, snapshot_id: str, hook_id: str) -> dict[str, Any]:
        """Run one hook recorded in the method's manifest against a stored request (Property 37).

        The hook gets a fresh context holding the snapshot's state and the request as it was
        served; an ``after`` hook also gets the response of a sandboxed replay, and a ``catch``
        hook the error the request failed with (or a stand-in when it did not fail). What the
        hook changed in the state comes back with its outcome and duration.
        """
        snapshot, endpoint = await self._load(snapshot_id)
        spec = next((h for h in endpoint.hooks if h.id == hook_id), None)
        if spec is None:
            known = ", ".join(h.id for h in endpoint.hooks) or "none"
            raise NotFound(f"{snapshot.handler} has no hook {hook_id!r} in its manifest (it has: {known})")
        lctx = LocalContext(replay_meta(snapshot, endpoint.served), redact=endpoint.redact)
        for key, value in copy.deepcopy(snapshot.state).items():
            lctx.set(key, value)
        request = copy.deepcopy(snapshot.request)
        args: tuple[Any, ...] = (lctx, request)
        if spec.phase == "after":
            replayed = await self.replay(snapshot_id, endpoint.served)
            if replayed["status"] != "OK":
                raise FailedPrecondition(
                    f"the after hook {hook_id!r} needs a response, and the sandboxed replay failed: "
                    f"{replayed['status']} {replayed['message']}"
                )
            args = (lctx, request, replayed["response"])
        elif spec.phase == "catch":
            args = (lctx, request, RecordedFailure(_recorded_error(snapshot)))
        before = to_jsonable(dict(lctx.state))
        started = time.perf_counter()
        status, message = "OK", ""
        try:
            await run_hook(spec, args)
        except Exception as exc:
            status = status_of(exc).name
            message = exc.message if isinstance(exc, ModrpcError) else f"{type(exc).__name__}: {exc}"
        duration = (time.perf_counter() - started) * 1000
        after_state = to_jsonable(dict(lctx.state))
        return {
            "snapshot": snapshot_id,
            "handler": snapshot.handler,
            "hook": {"id": spec.id, "phase": spec.phase, "level": spec.level, "source": spec.source},
            "status": status,
            "message": message,
            "duration_ms": duration,
            "state_before": before,
            "state_after": after_state,
        }


class RecordedFailure(Exception):
    """What a played-back catch hook receives: the error text its request was recorded with."""


def _recorded_error(snapshot: Snapshot) -> str:
    for event in reversed(snapshot.events):
        if event.kind == "lifecycle_end":
            return event.error or "the recorded request did not fail"
    return "the recorded request did not fail"


def diff_json(diff: Any) -> dict[str, Any]:
    """A :class:`~runtime.lcc.ReplayDiff` as JSON data."""
    return {
        "identical": diff.identical,
        "status": list(diff.status) if diff.status else None,
        "messages": list(diff.messages) if diff.messages else None,
        "response": [
            {"path": c.path, "kind": c.kind, "before": c.before, "after": c.after} for c in diff.response
        ],
        "trace": [
            {"op": c.op, "at": c.at, "before": [list(e) for e in c.before], "after": [list(e) for e in c.after]}
            for c in diff.trace
        ],
    }


def sandbox_handler(sandbox: Sandbox, role: str) -> grpc.GenericRpcHandler[bytes, bytes]:
    """The gRPC face of ``sandbox``: ``Replay``, ``Diff`` and ``PlayHook``, JSON in and out."""

    def method(body: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> Any:
        async def serve(payload: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            headers = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            try:
                # The principal header is believed from the gateway only (its certificate).
                peer = peer_of_grpc(context)
                if peer is None or peer.kind != "gateway":
                    raise PermissionDenied(f"replays are asked for by the gateway's playground, not by {peer or 'anonymous'}")
                if not principal_from_header(headers.get(PRINCIPAL_HEADER)).has_role(role):
                    raise PermissionDenied(f"replays need the playground's role {role!r}")
                try:
                    request = json.loads(payload or b"{}")
                except ValueError as exc:
                    raise InvalidArgument(f"a sandbox request is a JSON object: {exc}") from None
                if not isinstance(request, dict):
                    raise InvalidArgument("a sandbox request is a JSON object")
                answer = await body(request)
            except ModrpcError as exc:
                await context.abort(status_of(exc), exc.message)
                raise  # abort raises; never reached
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                log.error("sandbox call failed: %s", exc, exc_info=exc)
                await context.abort(grpc.StatusCode.INTERNAL, f"the sandbox failed: {type(exc).__name__}")
                raise
            return json.dumps(answer, default=str).encode()

        return grpc.unary_unary_rpc_method_handler(serve)

    def text(request: Mapping[str, Any], key: str) -> str:
        value = request.get(key)
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"a sandbox request needs {key!r}, a non-empty string")
        return value

    async def replay_one(request: dict[str, Any]) -> dict[str, Any]:
        return await sandbox.replay(text(request, "snapshot"), text(request, "version"), live=bool(request.get("live")))

    async def diff_two(request: dict[str, Any]) -> dict[str, Any]:
        return await sandbox.diff(
            text(request, "snapshot"), text(request, "first"), text(request, "second"), live=bool(request.get("live"))
        )

    async def play(request: dict[str, Any]) -> dict[str, Any]:
        return await sandbox.play_hook(text(request, "snapshot"), text(request, "hook"))

    return grpc.method_handlers_generic_handler(
        SANDBOX_SERVICE, {"Replay": method(replay_one), "Diff": method(diff_two), "PlayHook": method(play)}
    )
