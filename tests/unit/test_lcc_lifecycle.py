"""run_lifecycle, step by step: order, validation, errors, compensations, cleanup, time."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from runtime.deadline import Deadline
from runtime.errors import (
    DeadlineExceeded,
    FieldViolation,
    InternalError,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from runtime.lcc import (
    HookSpec,
    LifecycleCall,
    LocalContext,
    MemoryEventSink,
    MemorySnapshotStore,
    RequestMeta,
    Snapshot,
    run_lifecycle,
)


def make_lctx(
    *, deadline: Deadline | None = None, flags: frozenset[str] = frozenset()
) -> LocalContext:
    return LocalContext(
        RequestMeta(
            request_id="r-1",
            handler="shop.Order",
            method="/shop.v1.Shop/Order",
            version="2025-06-01",
            flags=flags,
            deadline=deadline,
        )
    )


def recorder(log: list[str], label: str, *, fail: bool = False) -> Any:
    """A hook that appends its label (any phase: it takes whatever arguments it is given)."""

    def hook(*args: Any) -> None:
        log.append(label)
        if fail:
            raise RuntimeError(f"{label} failed")

    return hook


async def test_success_runs_before_validate_handler_validate_after_then_cleanup() -> None:
    log: list[str] = []
    lctx = make_lctx()
    lctx.on_cleanup(recorder(log, "cleanup"))
    hooks = [
        HookSpec("g", "before", "global", recorder(log, "before-global")),
        HookSpec("g2", "after", "global", recorder(log, "after-global")),
        HookSpec("h", "before", "handler", recorder(log, "before-handler")),
        HookSpec("h2", "after", "handler", recorder(log, "after-handler")),
        HookSpec("c", "catch", "global", recorder(log, "catch")),
    ]

    async def handler(req: dict[str, int], lctx: LocalContext, gctx: Any) -> dict[str, int]:
        log.append(f"handler gctx={gctx}")
        return {"n": req["n"] + 1}

    response = await run_lifecycle(
        LifecycleCall(
            handler=handler,
            request={"n": 1},
            lctx=lctx,
            gctx="G",
            hooks=hooks,
            validate_request=lambda req: log.append("validate-request"),  # type: ignore[func-returns-value]
            validate_response=lambda resp: log.append(f"validate-response {resp}"),  # type: ignore[func-returns-value]
        )
    )
    assert response == {"n": 2}
    assert log == [
        "before-global",
        "before-handler",
        "validate-request",
        "handler gctx=G",
        "validate-response {'n': 2}",
        "after-handler",
        "after-global",
        "cleanup",
    ]


async def test_sync_handler_runs_in_a_thread_without_blocking_the_loop() -> None:
    release = threading.Event()
    ticks = 0

    def handler(req: Any, lctx: LocalContext, gctx: Any) -> int:
        assert release.wait(timeout=5)
        return threading.get_ident()

    async def ticker() -> None:
        nonlocal ticks
        while not release.is_set():
            ticks += 1
            if ticks == 5:
                release.set()
            await asyncio.sleep(0.001)

    run = asyncio.create_task(
        run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=make_lctx()))
    )
    await ticker()
    assert await run != threading.get_ident()
    assert ticks >= 5


async def test_a_bad_request_fails_validation_and_the_handler_never_runs() -> None:
    ran = []
    violation = FieldViolation("qty", "integer >= 1", 0)

    def validate(req: Any) -> None:
        raise ValidationFailed("request is invalid", [violation])

    sink = MemoryEventSink()
    with pytest.raises(ValidationFailed) as caught:
        await run_lifecycle(
            LifecycleCall(
                handler=lambda req, lctx, gctx: ran.append(1),
                request={"qty": 0},
                lctx=make_lctx(),
                validate_request=validate,
                sink=sink,
            )
        )
    assert caught.value.violations == [violation]
    assert ran == []
    [event] = [e for e in sink.events if e.kind == "validation_error"]
    assert event.name == "request" and "qty: expected integer >= 1, got 0" in (event.error or "")
    assert "handler_start" not in sink.kinds()


async def test_a_bad_response_is_internal_for_the_caller_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []

    def validate(resp: Any) -> None:
        raise ValidationFailed("response is invalid", [FieldViolation("id", "uuid", "nope")])

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> dict[str, str]:
        return {"id": "nope"}

    with (
        caplog.at_level(logging.ERROR, logger="modrpc.lcc"),
        pytest.raises(InternalError) as caught,
    ):
        await run_lifecycle(
            LifecycleCall(
                handler=handler,
                request={},
                lctx=make_lctx(),
                validate_response=validate,
                hooks=[
                    HookSpec("after", "after", "module", recorder(log, "after")),
                    HookSpec("catch", "catch", "module", recorder(log, "catch")),
                ],
            )
        )
    assert caught.value.message == "response failed validation"
    assert isinstance(caught.value.__cause__, ValidationFailed)
    assert log == ["catch"]
    assert "id: expected uuid, got 'nope'" in caplog.text


async def test_catch_hooks_see_the_error_and_a_failing_one_never_hides_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[BaseException] = []
    log: list[str] = []

    def watching(lctx: LocalContext, req: Any, exc: BaseException) -> None:
        seen.append(exc)

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> None:
        raise PermissionDenied("no")

    hooks = [
        HookSpec("watch", "catch", "global", watching),
        HookSpec("broken", "catch", "module", recorder(log, "broken", fail=True)),
    ]
    with caplog.at_level(logging.ERROR, logger="modrpc.lcc"), pytest.raises(PermissionDenied):
        await run_lifecycle(
            LifecycleCall(handler=handler, request={}, lctx=make_lctx(), hooks=hooks)
        )
    assert log == ["broken"]
    assert len(seen) == 1 and isinstance(seen[0], PermissionDenied)
    assert "catch hook broken failed" in caplog.text


async def test_a_failing_before_hook_fails_the_request_and_runs_catch_hooks() -> None:
    log: list[str] = []
    hooks = [
        HookSpec("auth", "before", "module", recorder(log, "auth", fail=True)),
        HookSpec("later", "before", "handler", recorder(log, "later")),
        HookSpec("catch", "catch", "global", recorder(log, "catch")),
    ]
    with pytest.raises(RuntimeError, match="auth failed"):
        await run_lifecycle(
            LifecycleCall(
                handler=recorder(log, "handler"), request={}, lctx=make_lctx(), hooks=hooks
            )
        )
    assert log == ["auth", "catch"]


async def test_compensations_run_newest_first_and_a_failing_one_raises_an_alert() -> None:
    log: list[str] = []
    sink = MemoryEventSink()

    async def undo_async() -> None:
        log.append("undo-2")

    def undo_broken() -> None:
        log.append("undo-3")
        raise OSError("inventory down")

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> None:
        lctx.compensate(lambda: log.append("undo-1"), name="undo-1")
        lctx.compensate(undo_async, name="undo-2")
        lctx.compensate(undo_broken, name="undo-3")
        raise NotFound("gone")

    with pytest.raises(NotFound):
        await run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=make_lctx(), sink=sink))
    assert log == ["undo-3", "undo-2", "undo-1"]
    steps = [
        (e.kind, e.name)
        for e in sink.events
        if e.kind in ("compensation", "compensation_error", "alert")
    ]
    assert steps == [
        ("compensation_error", "undo-3"),
        ("alert", "undo-3"),
        ("compensation", "undo-2"),
        ("compensation", "undo-1"),
    ]
    alert = next(e for e in sink.events if e.kind == "alert")
    assert alert.error == "undo step failed: OSError: inventory down"


async def test_compensations_do_not_run_on_success() -> None:
    log: list[str] = []

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> str:
        lctx.compensate(lambda: log.append("undo"))
        return "ok"

    assert await run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=make_lctx())) == "ok"
    assert log == []


async def test_a_hanging_compensation_is_bounded_by_its_timeout() -> None:
    sink = MemoryEventSink()

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> None:
        lctx.compensate(asyncio.Event().wait, name="hang", timeout=0.005)
        raise NotFound("x")

    with pytest.raises(NotFound):
        await run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=make_lctx(), sink=sink))
    alert = next(e for e in sink.events if e.kind == "alert")
    assert alert.error is not None and "undo step 'hang' timed out" in alert.error


async def test_cleanup_runs_newest_first_and_a_failing_cleanup_keeps_the_response() -> None:
    log: list[str] = []
    sink = MemoryEventSink()

    async def async_cleanup() -> None:
        log.append("async")

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> str:
        lctx.on_cleanup(recorder(log, "first"))
        lctx.on_cleanup(recorder(log, "broken", fail=True))
        lctx.on_cleanup(async_cleanup)
        return "ok"

    assert (
        await run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=make_lctx(), sink=sink))
        == "ok"
    )
    assert log == ["async", "broken", "first"]
    cleanup_errors = [e.error for e in sink.events if e.kind == "cleanup"]
    assert cleanup_errors == [None, "RuntimeError: broken failed", None]
    assert sink.events[-1].kind == "lifecycle_end" and sink.events[-1].error is None


async def test_external_cancellation_cancels_the_handler_runs_cleanup_and_undo_and_reraises() -> (
    None
):
    log: list[str] = []
    started = asyncio.Event()
    sink = MemoryEventSink()

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> None:
        lctx.on_cleanup(recorder(log, "cleanup"))
        lctx.compensate(recorder(log, "undo"))
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            log.append("handler cancelled")

    lctx = make_lctx()
    hooks = [HookSpec("catch", "catch", "global", recorder(log, "catch"))]
    task = asyncio.create_task(
        run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=lctx, hooks=hooks, sink=sink))
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["handler cancelled", "undo", "cleanup"]
    assert sink.kinds()[-1] == "lifecycle_end"
    assert sink.events[-1].error == "CancelledError"


async def test_past_the_deadline_the_handler_is_cancelled_cleanup_runs_and_deadline_exceeded() -> (
    None
):
    log: list[str] = []
    sink = MemoryEventSink()

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> None:
        lctx.on_cleanup(recorder(log, "cleanup"))
        await asyncio.Event().wait()

    began = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await run_lifecycle(
            LifecycleCall(
                handler=handler,
                request={},
                lctx=make_lctx(deadline=Deadline.after(0.02)),
                sink=sink,
            )
        )
    assert time.monotonic() - began < 1.0
    assert log == ["cleanup"]
    handler_error = next(e for e in sink.events if e.kind == "handler_error")
    assert handler_error.error == "CancelledError"


async def test_a_sync_handler_past_its_deadline_is_abandoned_promptly() -> None:
    release = threading.Event()

    def handler(req: Any, lctx: LocalContext, gctx: Any) -> None:
        release.wait(timeout=5)

    began = time.monotonic()
    try:
        with pytest.raises(DeadlineExceeded):
            await run_lifecycle(
                LifecycleCall(
                    handler=handler, request={}, lctx=make_lctx(deadline=Deadline.after(0.02))
                )
            )
        assert time.monotonic() - began < 1.0
    finally:
        release.set()


async def test_an_expired_deadline_fails_before_anything_runs() -> None:
    log: list[str] = []
    now = [10.0]
    deadline = Deadline.after(1.0, lambda: now[0])
    now[0] = 11.0
    with pytest.raises(DeadlineExceeded, match="before the call started"):
        await run_lifecycle(
            LifecycleCall(
                handler=recorder(log, "handler"),
                request={},
                lctx=make_lctx(deadline=deadline),
                hooks=[HookSpec("b", "before", "global", recorder(log, "before"))],
            )
        )
    assert log == []


async def test_a_timeout_error_of_the_handler_itself_is_not_a_deadline() -> None:
    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> None:
        raise TimeoutError("upstream timed out")

    with pytest.raises(TimeoutError, match="upstream"):
        await run_lifecycle(
            LifecycleCall(handler=handler, request={}, lctx=make_lctx(deadline=Deadline.after(5)))
        )


async def test_hook_retries_until_it_succeeds() -> None:
    calls = 0

    def flaky(lctx: LocalContext, req: Any) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("try again")

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> str:
        return "ok"

    hooks = [HookSpec("flaky", "before", "global", flaky, retries=2)]
    assert (
        await run_lifecycle(
            LifecycleCall(handler=handler, request={}, lctx=make_lctx(), hooks=hooks)
        )
        == "ok"
    )
    assert calls == 3


async def test_a_slow_hook_times_out_on_every_attempt_and_fails_the_request() -> None:
    attempts = 0

    async def slow(lctx: LocalContext, req: Any) -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.Event().wait()

    sink = MemoryEventSink()
    hooks = [HookSpec("slow", "before", "module", slow, timeout=0.005, retries=1)]
    with pytest.raises(TimeoutError, match=r"hook 'slow' timed out after 0\.005s"):
        await run_lifecycle(
            LifecycleCall(
                handler=recorder([], "h"), request={}, lctx=make_lctx(), hooks=hooks, sink=sink
            )
        )
    assert attempts == 2
    assert [e.kind for e in sink.events if e.name == "slow"] == ["hook_start", "hook_error"]


async def test_a_cancelled_hook_is_never_retried() -> None:
    attempts = 0
    entered = asyncio.Event()

    async def waits(lctx: LocalContext, req: Any) -> None:
        nonlocal attempts
        attempts += 1
        entered.set()
        await asyncio.Event().wait()

    hooks = [HookSpec("waits", "before", "module", waits, retries=5)]
    task = asyncio.create_task(
        run_lifecycle(
            LifecycleCall(handler=recorder([], "h"), request={}, lctx=make_lctx(), hooks=hooks)
        )
    )
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempts == 1


async def test_request_hooks_registered_by_the_handler_run_innermost() -> None:
    log: list[str] = []

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> str:
        lctx.add_hook("after", recorder(log, "after-request"))
        return "ok"

    hooks = [HookSpec("a", "after", "handler", recorder(log, "after-handler"))]
    await run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=make_lctx(), hooks=hooks))
    assert log == ["after-request", "after-handler"]


async def test_tasks_still_running_at_the_end_are_cancelled() -> None:
    lctx = make_lctx()
    holder: list[asyncio.Task[Any]] = []

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> str:
        holder.append(lctx.spawn(asyncio.Event().wait(), name="background"))
        return "ok"

    await run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=lctx))
    assert holder[0].cancelled()
    assert lctx.task_status() == {"background": "cancelled"}


async def test_a_snapshot_is_stored_when_the_flag_asks_and_not_otherwise() -> None:
    store = MemorySnapshotStore()

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> str:
        lctx.set("seen", req)
        return "ok"

    for flags in (frozenset(), frozenset({"snapshot"})):
        await run_lifecycle(
            LifecycleCall(
                handler=handler, request={"a": 1}, lctx=make_lctx(flags=flags), snapshots=store
            )
        )
    [snapshot_id] = await store.list()
    snapshot = await store.load(snapshot_id)
    assert snapshot.state == {"seen": {"a": 1}}
    assert [e.kind for e in snapshot.events][-1] == "lifecycle_end"


async def test_a_request_refused_by_validation_is_snapshotted_by_policy_only() -> None:
    """The flag alone would let a caller store requests the method never accepted."""

    def refuse(request: Any) -> None:
        raise ValidationFailed("invalid t.Get request: name: too long", [])

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> str:
        return "ok"

    flagged, by_policy = MemorySnapshotStore(), MemorySnapshotStore()
    for store, policy in ((flagged, False), (by_policy, True)):
        with pytest.raises(ValidationFailed):
            await run_lifecycle(
                LifecycleCall(
                    handler=handler, request={"name": "x" * 1000}, validate_request=refuse,
                    lctx=make_lctx(flags=frozenset({"snapshot"})), snapshots=store,
                    snapshot_policy=policy,
                )
            )  # fmt: skip
    assert await flagged.list() == []
    assert len(await by_policy.list()) == 1


async def test_memory_snapshots_are_pruned_by_age_then_by_total_size() -> None:
    now = [1000.0]
    store = MemorySnapshotStore(clock=lambda: now[0])

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> str:
        return "ok"

    async def save(size: int) -> str:
        lctx = make_lctx(flags=frozenset({"snapshot"}))
        await run_lifecycle(
            LifecycleCall(handler=handler, request={"pad": "x" * size}, lctx=lctx, snapshots=store)
        )
        return (await store.list())[-1]

    old = await save(10)
    now[0] += 100
    ids = [await save(20_000) for _ in range(3)]
    assert await store.prune(before=1050.0, max_bytes=10**9) == 1
    assert old not in await store.list()
    assert await store.prune(before=0.0, max_bytes=50_000) == 1  # the newest two fit
    assert await store.list() == ids[1:]


class _BrokenStore:
    """A snapshot store whose backend is down: every save fails."""

    async def save(self, snapshot: Snapshot) -> str:
        raise ConnectionRefusedError("store down")

    async def load(self, snapshot_id: str) -> Snapshot:
        raise NotFound(snapshot_id)

    async def list(self, handler: str | None = None) -> list[str]:
        return []


async def test_a_snapshot_that_cannot_be_stored_raises_an_alert_but_keeps_the_response() -> None:
    sink = MemoryEventSink()

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> str:
        return "ok"

    response = await run_lifecycle(
        LifecycleCall(
            handler=handler,
            request={},
            lctx=make_lctx(),
            sink=sink,
            snapshots=_BrokenStore(),
            snapshot_policy=True,
        )
    )
    assert response == "ok"
    assert sink.events[-1].kind == "alert"
    assert sink.events[-1].error == "snapshot not stored: ConnectionRefusedError: store down"


async def test_a_second_cancellation_never_cuts_an_undo_step_or_a_cleanup_short() -> None:
    """The lifecycle runs in its caller's task; its ending runs to the end whatever cancels that
    task meanwhile, and the cancellation is raised once it has."""
    log: list[str] = []
    undoing = asyncio.Event()
    sink = MemoryEventSink()

    async def undo() -> None:
        undoing.set()
        await asyncio.sleep(0.05)
        log.append("undone")

    async def cleanup() -> None:
        await asyncio.sleep(0.05)
        log.append("cleaned")

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> None:
        lctx.compensate(undo, name="undo")
        lctx.on_cleanup(cleanup)
        await asyncio.Event().wait()

    task = asyncio.create_task(
        run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=make_lctx(), sink=sink))
    )
    await asyncio.sleep(0.01)
    task.cancel()  # the caller goes away: the handler is cancelled, the undo step starts
    await undoing.wait()
    task.cancel()  # and again, mid-way through the undo step
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["undone", "cleaned"]
    assert [(e.kind, e.error) for e in sink.events if e.kind in ("compensation", "cleanup")] == [
        ("compensation", None),
        ("cleanup", None),
    ]
    assert sink.events[-1].kind == "lifecycle_end"


async def test_a_cancellation_at_the_deadline_is_the_deadline_and_is_raised_after_the_catch_hooks() -> None:
    """A transport cancels the call at its deadline too, sometimes a moment before the
    lifecycle's own timer: the lifecycle still ends as for the deadline (catch hooks, undo),
    then lets the cancellation through to the transport."""
    log: list[str] = []
    sink = MemoryEventSink()

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> None:
        lctx.compensate(recorder(log, "undo"))
        await asyncio.Event().wait()

    hooks = [HookSpec("catch", "catch", "global", recorder(log, "catch"))]
    now = [100.0]
    lctx = make_lctx(deadline=Deadline.after(30.0, lambda: now[0]))
    task = asyncio.create_task(
        run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=lctx, hooks=hooks, sink=sink))
    )
    await asyncio.sleep(0.01)
    now[0] += 30.0 - 0.02  # within the slack before the deadline, on the deadline's own clock
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["catch", "undo"]
    assert sink.events[-1].kind == "lifecycle_end"
    assert sink.events[-1].error == "DeadlineExceeded: shop.Order: deadline exceeded"


async def test_a_request_with_nothing_to_undo_or_clean_up_ends_in_its_callers_task() -> None:
    """The common ending costs no task: the lifecycle runs where it is awaited."""
    tasks: list[asyncio.Task[Any] | None] = []

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> dict[str, Any]:
        tasks.append(asyncio.current_task())
        return {}

    assert await run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=make_lctx())) == {}
    assert tasks == [asyncio.current_task()]
