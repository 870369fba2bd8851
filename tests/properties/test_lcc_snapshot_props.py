"""Property tests of snapshots, their storage, replays and replay diffs (SPEC §3 and §8)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from runtime.deadline import Deadline
from runtime.identity import new_request_id
from runtime.lcc import (
    HookSpec,
    LifecycleCall,
    LocalContext,
    LogSnapshotStore,
    MemorySnapshotStore,
    ReplayResult,
    RequestMeta,
    Snapshot,
    SnapshotStore,
    diff_replays,
    replay,
    run_lifecycle,
)
from runtime.lcc._replay import replay_meta, run_captured
from runtime.lcc._snapshot import should_snapshot

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
states = st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=6)
task_fates = st.dictionaries(
    st.from_regex(r"\A[a-z]{1,8}\Z"),
    st.sampled_from(["pending", "done", "cancelled", "failed"]),
    max_size=5,
)
flag_sets = st.frozensets(st.sampled_from(["snapshot", "debug", "trace"]))


class FrozenClock:
    """A monotonic clock that only moves when told to, so deadline budgets compare exactly."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_meta(
    *,
    flags: frozenset[str] = frozenset(),
    deadline: Deadline | None = None,
    handler: str = "shop.Order",
) -> RequestMeta:
    return RequestMeta(
        request_id=new_request_id(),
        handler=handler,
        method="/shop.v1.Shop/Order",
        version="2025-06-01",
        flags=flags,
        deadline=deadline,
    )


async def _fated(fate: str, gate: asyncio.Event) -> None:
    if fate == "failed":
        raise RuntimeError("task failed")
    if fate in ("pending", "cancelled"):
        await gate.wait()


async def snapshot_mid_request(
    request: Any,
    state: dict[str, Any],
    fates: dict[str, str],
    hooks_before: int,
    meta: RequestMeta,
) -> tuple[Snapshot, LocalContext]:
    """Run a real lifecycle whose handler sets ``state``, starts tasks that end as ``fates``
    say, and takes a snapshot; returns that snapshot and the context."""
    taken: list[Snapshot] = []

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> str:
        for key, value in state.items():
            lctx.set(key, value)
        gate = asyncio.Event()
        tasks = {name: lctx.spawn(_fated(fate, gate), name=name) for name, fate in fates.items()}
        for name, fate in fates.items():
            if fate == "cancelled":
                tasks[name].cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        taken.append(lctx.snapshot())
        return "ok"

    lctx = LocalContext(meta)
    hooks = [
        HookSpec(f"hook-{i}", "before", "module", lambda lctx, req: None)
        for i in range(hooks_before)
    ]
    await run_lifecycle(LifecycleCall(handler=handler, request=request, lctx=lctx, hooks=hooks))
    return taken[0], lctx


@settings(max_examples=100, deadline=None)
@given(
    request=json_values,
    state=states,
    fates=task_fates,
    hooks_before=st.integers(min_value=0, max_value=4),
    deadline_ms=st.one_of(st.none(), st.integers(min_value=10_000, max_value=600_000)),
)
def test_a_snapshot_is_complete(
    request: Any,
    state: dict[str, Any],
    fates: dict[str, str],
    hooks_before: int,
    deadline_ms: int | None,
) -> None:
    """Property 21: A snapshot is complete.

    It holds the request, the lctx state, each task's status, the index of the last hook run,
    the handler version, the lifecycle events so far and the meta.
    """
    clock = FrozenClock(1000.0)
    deadline = None if deadline_ms is None else Deadline.after(deadline_ms / 1000, clock)
    meta = make_meta(deadline=deadline)
    snapshot, lctx = asyncio.run(snapshot_mid_request(request, state, fates, hooks_before, meta))
    assert snapshot.request == request
    assert snapshot.state == state
    assert snapshot.tasks == fates
    assert snapshot.last_hook == hooks_before - 1
    assert snapshot.version == meta.version
    assert snapshot.events == lctx.events[: len(snapshot.events)]
    assert [e.kind for e in snapshot.events][-1] == "handler_start"
    assert sum(e.kind == "hook_end" for e in snapshot.events) == hooks_before
    assert snapshot.meta == meta.to_json()
    assert snapshot.meta["deadline_ms"] == deadline_ms


@settings(max_examples=100, deadline=None)
@given(
    request=json_values,
    state=states,
    fates=task_fates,
    hooks_before=st.integers(min_value=0, max_value=3),
    flags=flag_sets,
    deadline_ms=st.one_of(st.none(), st.integers(min_value=10_000, max_value=600_000)),
)
def test_restoring_a_snapshot_is_faithful(
    request: Any,
    state: dict[str, Any],
    fates: dict[str, str],
    hooks_before: int,
    flags: frozenset[str],
    deadline_ms: int | None,
) -> None:
    """Property 47: Restoring a snapshot is faithful.

    snapshot → restore → snapshot gives the identical snapshot, and so does a trip through
    JSON text; the restored context exposes the same state, request, meta and events.
    """
    clock = FrozenClock(500.0)
    deadline = None if deadline_ms is None else Deadline.after(deadline_ms / 1000, clock)
    meta = make_meta(flags=flags, deadline=deadline)
    snapshot, _ = asyncio.run(snapshot_mid_request(request, state, fates, hooks_before, meta))
    restored = LocalContext.restore(snapshot, clock=FrozenClock(9_999.5))
    assert restored.snapshot() == snapshot
    assert Snapshot.from_json(json.loads(json.dumps(snapshot.to_json()))) == snapshot
    assert dict(restored.state) == state and restored.request == request
    assert restored.events == snapshot.events and restored.task_status() == fates
    assert restored.last_hook == hooks_before - 1
    assert (restored.meta.request_id, restored.meta.flags) == (meta.request_id, meta.flags)


class AppendLog:
    """A small in-process append-only log with one counter shared by every stream, as a
    database sequence would be."""

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


@settings(max_examples=100, deadline=None)
@given(
    calls=st.lists(
        st.tuples(st.booleans(), flag_sets, st.sampled_from(["shop.Order", "shop.Refund"]), states),
        min_size=1,
        max_size=6,
    ),
    backend=st.sampled_from(["memory", "log"]),
)
def test_snapshots_are_stored(
    calls: list[tuple[bool, frozenset[str], str, dict[str, Any]]], backend: str
) -> None:
    """Property 44: Snapshots are stored.

    A call is stored exactly when its method policy or its ``snapshot`` flag asks for it, and
    the stored snapshot loads back equal to the request's final state, listed under its handler.
    """

    async def handler(req: dict[str, Any], lctx: LocalContext, gctx: Any) -> str:
        for key, value in req.items():
            lctx.set(key, value)
        return "ok"

    async def main() -> None:
        store: SnapshotStore = (
            MemorySnapshotStore() if backend == "memory" else LogSnapshotStore(AppendLog(), page=2)
        )
        expected: list[tuple[str, Snapshot]] = []
        for policy, flags, handler_id, state in calls:
            lctx = LocalContext(make_meta(flags=flags, handler=handler_id))
            await run_lifecycle(
                LifecycleCall(
                    handler=handler,
                    request=state,
                    lctx=lctx,
                    snapshots=store,
                    snapshot_policy=policy,
                )
            )
            if should_snapshot(lctx.meta, policy):
                assert policy or "snapshot" in flags
                expected.append((handler_id, lctx.snapshot()))
            else:
                assert not policy and "snapshot" not in flags
        ids = await store.list()
        assert len(ids) == len(expected)
        for snapshot_id, (handler_id, snapshot) in zip(ids, expected, strict=True):
            loaded = await store.load(snapshot_id)
            assert loaded == snapshot and loaded.state == snapshot.state
            assert snapshot_id in await store.list(handler=handler_id)
        for handler_id in ("shop.Order", "shop.Refund"):
            assert len(await store.list(handler=handler_id)) == sum(
                h == handler_id for h, _ in expected
            )

    asyncio.run(main())


def priced_handler(version: str) -> Any:
    """The handler of one version: later versions add tax and a currency field."""
    tax = sum(map(ord, version)) % 7

    async def handler(req: dict[str, Any], lctx: LocalContext, gctx: Any) -> dict[str, Any]:
        if req["qty"] < 0:
            raise ValueError("negative quantity")
        response: dict[str, Any] = {"version": lctx.meta.version, "total": req["qty"] * 10 + tax}
        if tax % 2:
            response["currency"] = "EUR"
        return response

    return handler


def runner_for(snapshot: Snapshot, received: list[str]) -> Any:
    """A ``run`` that replays the snapshot's request through the real lifecycle at a version."""

    async def run(request: Any, version: str) -> ReplayResult:
        received.append(version)
        lctx = LocalContext(replay_meta(snapshot, version))
        hooks = (
            [HookSpec("audit", "after", "module", lambda lctx, req, resp: None)]
            if len(version) % 2
            else []
        )
        return await run_captured(
            LifecycleCall(handler=priced_handler(version), request=request, lctx=lctx, hooks=hooks)
        )

    return run


async def recorded_snapshot(qty: int) -> Snapshot:
    lctx = LocalContext(make_meta(flags=frozenset({"snapshot"})))
    try:
        await run_lifecycle(
            LifecycleCall(handler=priced_handler("2025-06-01"), request={"qty": qty}, lctx=lctx)
        )
    except ValueError:
        pass
    return lctx.snapshot()


versions = st.one_of(
    st.dates().map(str),
    st.from_regex(r"\Atsv:[0-9]{10}-shop-[0-9]{1,3}\Z"),
    st.sampled_from(["stable", "latest", "v1.2.0"]),
)


@settings(max_examples=100, deadline=None)
@given(
    qty=st.integers(min_value=-3, max_value=50), asked=st.lists(versions, min_size=1, max_size=4)
)
def test_a_snapshot_can_be_replayed_against_any_version(qty: int, asked: list[str]) -> None:
    """Property 45: A snapshot can be replayed against any version.

    ``run`` receives exactly the version asked for and the snapshot's request, and the result
    is that version's outcome (response or error status) with its trace.
    """

    async def main() -> None:
        snapshot = await recorded_snapshot(qty)
        received: list[str] = []
        run = runner_for(snapshot, received)
        for version in asked:
            result = await replay(snapshot, run, version)
            assert result.version == version
            if qty < 0:
                assert (result.status, result.message, result.response) == (
                    "INTERNAL",
                    "ValueError",
                    None,
                )
            else:
                tax = sum(map(ord, version)) % 7
                assert result.ok and result.response["version"] == version
                assert result.response["total"] == qty * 10 + tax
            assert result.trace[0] == ("lifecycle_start", "shop.Order")
            assert result.trace[-1] == ("lifecycle_end", "shop.Order")
        assert received == asked
        assert snapshot.request == {"qty": qty}

    asyncio.run(main())


_PATH_PART = re.compile(r'(?:\.|^)([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def parse_path(path: str) -> list[str | int]:
    """Split a diff path (``items[2].sku``, ``["odd key"]``) into keys and indexes."""
    parts: list[str | int] = []
    position = 0
    while position < len(path):
        match = _PATH_PART.match(path, position)
        assert match is not None, f"unparsable path {path!r} at {position}"
        name, index, quoted = match.groups()
        parts.append(
            name if name is not None else int(index) if index is not None else json.loads(quoted)
        )
        position = match.end()
    return parts


def resolve(value: Any, parts: list[str | int]) -> Any:
    for part in parts:
        value = value[part]
    return value


def apply_changes(a: Any, changes: tuple[Any, ...]) -> Any:
    """Apply a response diff to a copy of ``a``: set and dict edits first, then list tails."""
    result = json.loads(json.dumps(a))
    if any(c.path == "" for c in changes):
        return next(c.after for c in changes if c.path == "")
    list_removals = []
    list_additions = []
    for change in changes:
        parts = parse_path(change.path)
        parent = resolve(result, parts[:-1])
        last = parts[-1]
        if isinstance(parent, list) and change.kind == "removed":
            list_removals.append((parent, last))
        elif isinstance(parent, list) and change.kind == "added":
            list_additions.append((parent, change.after))
        elif change.kind == "removed":
            del parent[last]
        else:
            parent[last] = change.after
    for parent, index in reversed(list_removals):
        del parent[index]
    for parent, item in list_additions:
        parent.append(item)
    return result


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values, where ``true``/``false`` are not the numbers 1 and 0.

    Python's ``==`` says ``False == 0``; a replay diff must not (a response that turned a
    flag into a count changed).
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


traces = st.lists(
    st.tuples(
        st.sampled_from(["hook_start", "hook_end", "handler_start"]), st.sampled_from(["a", "b"])
    ),
    max_size=8,
).map(tuple)


@settings(max_examples=100, deadline=None)
@given(a=json_values, b=json_values, trace_a=traces, trace_b=traces)
@example(a=False, b=0, trace_a=(), trace_b=())
@example(a={"n": [1, True]}, b={"n": [1, 1]}, trace_a=(), trace_b=())
def test_replays_are_diffed(a: Any, b: Any, trace_a: Any, trace_b: Any) -> None:
    """Property 46: Replays are diffed.

    The response diff is empty exactly when the responses are equal, every change names a
    path holding the values it reports, and applying the changes to the first response gives
    the second; the trace diff, applied to the first trace, gives the second.
    """
    first = ReplayResult("v1", a, "OK", trace=trace_a)
    second = ReplayResult("v2", b, "OK", trace=trace_b)
    diff = diff_replays(first, second)
    assert (diff.response == ()) == json_equal(a, b)
    for change in diff.response:
        parts = parse_path(change.path)
        if change.kind != "added":
            assert resolve(a, parts) == change.before
        if change.kind != "removed":
            assert resolve(b, parts) == change.after
    assert json_equal(apply_changes(a, diff.response), b)
    rebuilt = list(trace_a)
    for change in reversed(diff.trace):
        assert tuple(rebuilt[change.at : change.at + len(change.before)]) == change.before
        rebuilt[change.at : change.at + len(change.before)] = change.after
    assert tuple(rebuilt) == trace_b
    assert (diff.trace == ()) == (trace_a == trace_b)
    assert diff.identical == (json_equal(a, b) and trace_a == trace_b)
