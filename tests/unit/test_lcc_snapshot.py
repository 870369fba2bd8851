"""Snapshots: JSON form, redaction, restore, the stores, and replay diffs."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import json
import threading
import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from runtime.deadline import Deadline
from runtime.errors import InternalError, InvalidArgument, NotFound, PermissionDenied
from runtime.identity import Principal
from runtime.lcc import (
    LifecycleCall,
    LocalContext,
    LogSnapshotStore,
    MemorySnapshotStore,
    ReplayResult,
    RequestMeta,
    Snapshot,
    TraceChange,
    ValueChange,
    diff_replays,
    replay,
    run_lifecycle,
)
from runtime.lcc._json import to_jsonable
from runtime.lcc._replay import replay_meta, run_captured
from runtime.lcc._snapshot import SNAPSHOT_FORMAT, should_snapshot

SECRET = "s3cr3t-token-value"


def make_meta(
    *,
    flags: frozenset[str] = frozenset(),
    deadline: Deadline | None = None,
    handler: str = "shop.Order",
) -> RequestMeta:
    return RequestMeta(
        request_id="r-1",
        handler=handler,
        method="/shop.v1.Shop/Order",
        version="2025-06-01",
        flags=flags,
        deadline=deadline,
        principal=Principal("alice", ("buyer",), "jwt"),
    )


def redact(document: Any) -> Any:
    """Replace the one known secret wherever it appears, even inside longer strings."""
    if isinstance(document, dict):
        return {key: redact(value) for key, value in document.items()}
    if isinstance(document, list):
        return [redact(value) for value in document]
    if isinstance(document, str):
        return document.replace(SECRET, "***")
    return document


class Colour(enum.Enum):
    RED = "red"


class Item(BaseModel):
    sku: str
    when: datetime.date


@dataclasses.dataclass
class Line:
    qty: int
    tags: tuple[str, ...]


def test_to_jsonable_converts_models_dataclasses_and_scalars() -> None:
    value = {
        "item": Item(sku="a", when=datetime.date(2025, 6, 1)),
        "line": Line(2, ("x", "y")),
        "colour": Colour.RED,
        "set": {3, 1, 2},
        "bytes": b"\x00\x01",
        "id": uuid.UUID(int=1),
        "nan": float("nan"),
        "inf": float("-inf"),
        7: "int key",
        "lock": threading.Lock(),
    }
    assert to_jsonable(value) == {
        "item": {"sku": "a", "when": "2025-06-01"},
        "line": {"qty": 2, "tags": ["x", "y"]},
        "colour": "red",
        "set": [1, 2, 3],
        "bytes": "AAE=",
        "id": "00000000-0000-0000-0000-000000000001",
        "nan": "NaN",
        "inf": "-Infinity",
        "7": "int key",
        "lock": {"$unserializable": "_thread.lock"},
    }


def test_should_snapshot_follows_the_policy_or_the_flag() -> None:
    assert should_snapshot(make_meta(), policy_snapshot=True)
    assert should_snapshot(make_meta(flags=frozenset({"snapshot"})), policy_snapshot=False)
    assert not should_snapshot(make_meta(flags=frozenset({"debug"})), policy_snapshot=False)


async def test_a_snapshot_taken_in_the_handler_holds_everything_so_far() -> None:
    seen: list[Snapshot] = []

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> str:
        lctx.set("step", 1)
        lctx.spawn(asyncio.Event().wait(), name="waiter")
        seen.append(lctx.snapshot())
        return "ok"

    now = [50.0]
    lctx = LocalContext(make_meta(deadline=Deadline.after(2.0, lambda: now[0])))
    lctx.add_hook("before", lambda lctx, req: None, id="first")
    await run_lifecycle(
        LifecycleCall(
            handler=handler, request=Item(sku="a", when=datetime.date(2025, 1, 2)), lctx=lctx
        )
    )
    [snapshot] = seen
    assert snapshot.request == {"sku": "a", "when": "2025-01-02"}
    assert snapshot.state == {"step": 1}
    assert snapshot.tasks == {"waiter": "pending"}
    assert snapshot.last_hook == 0
    assert snapshot.version == "2025-06-01"
    assert [(e.kind, e.name) for e in snapshot.events] == [
        ("lifecycle_start", "shop.Order"),
        ("hook_start", "first"),
        ("hook_end", "first"),
        ("handler_start", "shop.Order"),
    ]
    assert snapshot.meta["deadline_ms"] == 2000
    assert snapshot.meta["principal"] == {"subject": "alice", "roles": ["buyer"], "method": "jwt"}
    assert (snapshot.request_id, snapshot.handler) == ("r-1", "shop.Order")


async def test_secrets_never_enter_a_snapshot() -> None:
    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> None:
        lctx.set("token", SECRET)
        lctx.set("nested", {"header": f"Bearer {SECRET}"})
        raise PermissionDenied(f"token {SECRET} refused")

    store = MemorySnapshotStore()
    lctx = LocalContext(make_meta(), redact=redact)
    with pytest.raises(PermissionDenied):
        await run_lifecycle(
            LifecycleCall(
                handler=handler,
                request={"password": SECRET},
                lctx=lctx,
                snapshots=store,
                snapshot_policy=True,
            )
        )
    [snapshot_id] = await store.list()
    stored = await store.load(snapshot_id)
    text = json.dumps(stored.to_json())
    assert SECRET not in text
    assert stored.state == {"token": "***", "nested": {"header": "Bearer ***"}}
    assert stored.request == {"password": "***"}
    assert any(e.error == "PermissionDenied: token *** refused" for e in stored.events)


def test_snapshot_json_round_trip_is_exact() -> None:
    lctx = LocalContext(make_meta())
    lctx.set("a", [1, 2.5, None, {"b": True}])
    snapshot = lctx.snapshot()
    text = json.dumps(snapshot.to_json())
    assert Snapshot.from_json(json.loads(text)) == snapshot
    assert snapshot.to_json()["format"] == SNAPSHOT_FORMAT


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format=99), "format 99"),
        (lambda d: d.pop("state"), "malformed"),
        (lambda d: d.update(tasks={"t": "sleeping"}), "unknown status"),
        (lambda d: d["meta"].update(request_id="bad id"), "malformed"),
        (lambda d: d.update(events=[{"kind": "party"}]), "malformed"),
    ],
)
def test_a_malformed_snapshot_document_is_refused(mutate: Any, message: str) -> None:
    document = LocalContext(make_meta()).snapshot().to_json()
    mutate(document)
    with pytest.raises(InvalidArgument, match=message):
        Snapshot.from_json(document)


def test_snapshot_from_json_refuses_a_non_object() -> None:
    with pytest.raises(InvalidArgument, match="JSON object"):
        Snapshot.from_json([])  # type: ignore[arg-type]


async def test_restore_rebuilds_the_context_and_a_new_snapshot_is_identical() -> None:
    now = [7.0]
    lctx = LocalContext(make_meta(deadline=Deadline.after(0.75, lambda: now[0])))
    lctx.set("cart", {"items": [1, 2]})
    snapshot = lctx.snapshot()
    restored = LocalContext.restore(snapshot, clock=lambda: 99.0)
    assert restored.meta == dataclasses.replace(lctx.meta, deadline=restored.meta.deadline)
    assert (
        restored.meta.deadline is not None
        and restored.meta.deadline.remaining() == pytest.approx(0.75)
    )
    assert dict(restored.state) == {"cart": {"items": [1, 2]}}
    assert restored.snapshot() == snapshot
    restored.set("cart", "changed")
    assert snapshot.state == {"cart": {"items": [1, 2]}}


async def test_a_restored_context_cannot_run_again() -> None:
    restored = LocalContext.restore(LocalContext(make_meta()).snapshot())

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> None: ...

    with pytest.raises(RuntimeError, match="single-use"):
        await run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=restored))


async def test_memory_store_saves_loads_and_lists_by_handler() -> None:
    store = MemorySnapshotStore()
    first = await store.save(LocalContext(make_meta()).snapshot())
    second = await store.save(LocalContext(make_meta(handler="shop.Refund")).snapshot())
    assert await store.list() == [first, second]
    assert await store.list(handler="shop.Refund") == [second]
    assert (await store.load(second)).handler == "shop.Refund"
    with pytest.raises(NotFound):
        await store.load("404")


class AppendLog:
    """A small in-process append-only log with one counter shared by every stream, as a
    database sequence would be, so sequence numbers within one stream have gaps."""

    def __init__(self) -> None:
        self._seq = 0
        self._rows: list[tuple[str, int, str]] = []

    async def append(self, stream: str, record: dict[str, Any]) -> int:
        self._seq += 1
        self._rows.append((stream, self._seq, json.dumps(record)))
        return self._seq

    async def read(
        self, stream: str, after: int = 0, limit: int = 100
    ) -> list[tuple[int, dict[str, Any]]]:
        rows = [
            (seq, json.loads(text)) for s, seq, text in self._rows if s == stream and seq > after
        ]
        return rows[:limit]


async def test_log_store_keeps_snapshots_in_one_stream_despite_sequence_gaps() -> None:
    log = AppendLog()
    store = LogSnapshotStore(log, page=2)
    ids = []
    for index in range(5):
        await log.append("audit", {"n": index})
        handler = "shop.Order" if index % 2 == 0 else "shop.Refund"
        lctx = LocalContext(make_meta(handler=handler))
        lctx.set("n", index)
        ids.append(await store.save(lctx.snapshot()))
    assert ids == ["2", "4", "6", "8", "10"]
    assert await store.list() == ids
    assert await store.list(handler="shop.Refund") == ["4", "8"]
    assert (await store.load("6")).state == {"n": 2}
    for missing in ("1", "3", "11", "x"):
        with pytest.raises(NotFound):
            await store.load(missing)


def test_diff_replays_reports_response_paths_status_and_trace() -> None:
    a = ReplayResult(
        "v1",
        {"total": 10, "items": [{"sku": "a"}], "odd key": 1},
        "OK",
        trace=(("lifecycle_start", "m.H"), ("handler_start", "m.H"), ("lifecycle_end", "m.H")),
    )
    b = ReplayResult(
        "v2",
        {"total": 12, "items": [{"sku": "a"}, {"sku": "b"}], "currency": "EUR"},
        "OK",
        trace=(
            ("lifecycle_start", "m.H"),
            ("hook_start", "audit"),
            ("handler_start", "m.H"),
            ("lifecycle_end", "m.H"),
        ),
    )
    diff = diff_replays(a, b)
    assert diff.response == (
        ValueChange("currency", "added", None, "EUR"),
        ValueChange("items[1]", "added", None, {"sku": "b"}),
        ValueChange('["odd key"]', "removed", 1, None),
        ValueChange("total", "changed", 10, 12),
    )
    assert diff.trace == (TraceChange("insert", 1, (), (("hook_start", "audit"),)),)
    assert diff.status is None and not diff.identical
    assert diff_replays(a, a).identical


def test_diff_replays_tells_true_from_one_and_an_error_from_a_response() -> None:
    ok = ReplayResult("v1", {"flag": True}, "OK")
    assert diff_replays(ok, ReplayResult("v1", {"flag": 1}, "OK")).response == (
        ValueChange("flag", "changed", True, 1),
    )
    failed = ReplayResult.failed("v2", PermissionDenied("nope"))
    diff = diff_replays(ok, failed)
    assert diff.status == ("OK", "PERMISSION_DENIED")
    assert diff.messages == ("", "nope")
    assert diff.response == (ValueChange("", "changed", {"flag": True}, None),)


def test_replay_result_hides_the_message_of_a_non_runtime_error() -> None:
    result = ReplayResult.failed("v1", KeyError("internal detail"))
    assert (result.status, result.message) == ("INTERNAL", "KeyError")
    assert ReplayResult.from_json(json.loads(json.dumps(result.to_json()))) == result


async def test_replay_refuses_a_result_for_another_version() -> None:
    snapshot = LocalContext(make_meta()).snapshot()

    async def wrong(request: Any, version: str) -> ReplayResult:
        return ReplayResult("other", None, "OK")

    with pytest.raises(InternalError, match="asked for version 'v2' but ran 'other'"):
        await replay(snapshot, wrong, "v2")
    with pytest.raises(InvalidArgument):
        await replay(snapshot, wrong, "")


def test_replay_meta_gets_a_fresh_id_the_version_no_deadline_and_no_snapshot_flag() -> None:
    lctx = LocalContext(
        make_meta(flags=frozenset({"snapshot", "debug"}), deadline=Deadline.after(1))
    )
    meta = replay_meta(lctx.snapshot(), "2026-01-01")
    assert meta.request_id != "r-1"
    assert (meta.version, meta.deadline, meta.flags) == ("2026-01-01", None, frozenset({"debug"}))
    assert (meta.handler, meta.method, meta.principal) == (
        lctx.meta.handler,
        lctx.meta.method,
        lctx.meta.principal,
    )


async def test_run_captured_turns_the_outcome_into_a_result() -> None:
    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> Item:
        return Item(sku=req["sku"], when=datetime.date(2025, 1, 1))

    result = await run_captured(
        LifecycleCall(handler=handler, request={"sku": "z"}, lctx=LocalContext(make_meta()))
    )
    assert result.ok and result.response == {"sku": "z", "when": "2025-01-01"}
    assert result.trace[0] == ("lifecycle_start", "shop.Order")
    assert result.trace[-1] == ("lifecycle_end", "shop.Order")


async def test_log_store_over_the_sqlite_manifest_store_survives_a_restart(tmp_path: Any) -> None:
    from runtime.store import open_store

    url = f"sqlite:///{tmp_path}/store.db"
    saved: dict[str, Snapshot] = {}
    async with open_store(url) as manifest_store:
        store = LogSnapshotStore(manifest_store)
        await manifest_store.append("audit", {"not": "a snapshot"})
        for index, handler in enumerate(["shop.Order", "shop.Refund", "shop.Order"]):
            lctx = LocalContext(make_meta(handler=handler), redact=redact)
            lctx.set("n", index)
            lctx.set("token", SECRET)
            snapshot = lctx.snapshot()
            saved[await store.save(snapshot)] = snapshot
    async with open_store(url) as reopened:
        store = LogSnapshotStore(reopened)
        assert await store.list() == list(saved)
        assert len(await store.list(handler="shop.Order")) == 2
        for snapshot_id, snapshot in saved.items():
            assert await store.load(snapshot_id) == snapshot
        missing = str(max(int(i) for i in saved) + 100)
        with pytest.raises(NotFound):
            await store.load(missing)
