"""Property tests of the request lifecycle (SPEC §3 and §8)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.deadline import Deadline
from runtime.errors import DeadlineExceeded, ValidationFailed, status_of
from runtime.identity import is_valid_request_id, new_request_id
from runtime.lcc import (
    HookSpec,
    LifecycleCall,
    LocalContext,
    MemoryEventSink,
    RequestMeta,
    run_lifecycle,
)
from runtime.lcc._hooks import LEVELS, PHASES

HANDLER = "shop.Order"


def make_meta(request_id: str | None = None, *, deadline: Deadline | None = None) -> RequestMeta:
    return RequestMeta(
        request_id=request_id or new_request_id(),
        handler=HANDLER,
        method="/shop.v1.Shop/Order",
        version="2025-06-01",
        deadline=deadline,
    )


class Boom(Exception):
    """The failure the generated handlers raise."""


def labelled_hook(log: list[str], label: str, is_async: bool, *, fail: bool = False) -> Any:
    """A hook for any phase that records ``label``: async or sync (run in a thread)."""
    if is_async:

        async def async_hook(*args: Any) -> None:
            log.append(label)
            if fail:
                raise Boom(label)

        return async_hook

    def sync_hook(*args: Any) -> None:
        log.append(label)
        if fail:
            raise Boom(label)

    return sync_hook


hook_defs = st.lists(
    st.tuples(st.sampled_from(LEVELS), st.sampled_from(PHASES), st.booleans()), max_size=12
)
outcomes = st.sampled_from(["ok", "handler raises", "request invalid"])


def build_call(
    defs: list[tuple[str, str, bool]], outcome: str, log: list[str], sink: MemoryEventSink
) -> LifecycleCall:
    lctx = LocalContext(make_meta())
    static: list[HookSpec] = []
    for index, (level, phase, is_async) in enumerate(defs):
        label = f"{phase}:{level}:{index}"
        fn = labelled_hook(log, label, is_async)
        if level == "request":
            lctx.add_hook(phase, fn, id=label)  # type: ignore[arg-type]
        else:
            static.append(HookSpec(label, phase, level, fn))  # type: ignore[arg-type]

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> str:
        log.append("handler")
        if outcome == "handler raises":
            raise Boom("handler")
        return "ok"

    def validate_request(req: Any) -> None:
        log.append("validate")
        if outcome == "request invalid":
            raise ValidationFailed("request is invalid", [])

    return LifecycleCall(
        handler=handler,
        request={},
        lctx=lctx,
        hooks=static,
        validate_request=validate_request,
        sink=sink,
    )


def expected_order(defs: list[tuple[str, str, bool]], outcome: str) -> list[str]:
    """SPEC §3 written out: before hooks level by level, then the handler, then the after hooks
    (success) or catch hooks (error) in exactly the reverse order."""

    def phase_in_level_order(phase: str) -> list[str]:
        return [
            f"{phase}:{level}:{index}"
            for level in LEVELS
            for index, (hook_level, hook_phase, _) in enumerate(defs)
            if hook_level == level and hook_phase == phase
        ]

    order = [*phase_in_level_order("before"), "validate"]
    if outcome == "request invalid":
        return order + phase_in_level_order("catch")[::-1]
    order.append("handler")
    if outcome == "handler raises":
        return order + phase_in_level_order("catch")[::-1]
    return order + phase_in_level_order("after")[::-1]


@settings(max_examples=100, deadline=None)
@given(defs=hook_defs, outcome=outcomes)
def test_hooks_run_in_the_order_of_section_3(
    defs: list[tuple[str, str, bool]], outcome: str
) -> None:
    """Property 25: Hooks run in the order of section 3.

    Before hooks run global → module → handler → request; after hooks (on success) and catch
    hooks (on error) run in exactly the reverse order, with sync and async hooks mixed.
    """
    log: list[str] = []
    call = build_call(defs, outcome, log, MemoryEventSink())
    try:
        assert asyncio.run(run_lifecycle(call)) == "ok"
        assert outcome == "ok"
    except (Boom, ValidationFailed):
        assert outcome != "ok"
    assert log == expected_order(defs, outcome)


@settings(max_examples=100, deadline=None)
@given(defs=hook_defs, outcome=outcomes)
def test_lifecycle_events_are_emitted(defs: list[tuple[str, str, bool]], outcome: str) -> None:
    """Property 20: Lifecycle events are emitted.

    Every hook, the handler and validation produce structured events: each start is closed by
    an end or an error, the trace opens with lifecycle_start and closes with lifecycle_end, and
    the sink and ``lctx.events`` hold the same records.
    """
    log: list[str] = []
    sink = MemoryEventSink()
    call = build_call(defs, outcome, log, sink)
    try:
        asyncio.run(run_lifecycle(call))
    except (Boom, ValidationFailed):
        pass
    events = sink.events
    assert list(call.lctx.events) == events
    assert events[0].kind == "lifecycle_start" and events[-1].kind == "lifecycle_end"
    assert (events[-1].error is None) == (outcome == "ok")
    assert all(e.request_id == call.lctx.meta.request_id and e.handler == HANDLER for e in events)
    hook_runs = [e.name for e in events if e.kind == "hook_start"]
    assert hook_runs == [label for label in log if label not in ("handler", "validate")]
    open_step: str | None = None
    for event in events[1:-1]:
        if event.kind in ("hook_start", "handler_start"):
            assert open_step is None
            open_step = event.name
        elif event.kind in ("hook_end", "hook_error", "handler_end", "handler_error"):
            assert open_step == event.name
            assert event.duration_ms is not None and event.duration_ms >= 0
            open_step = None
    assert open_step is None
    handler_kinds = [e.kind for e in events if e.kind.startswith("handler_")]
    validation = [e.name for e in events if e.kind == "validation_error"]
    if outcome == "ok":
        assert handler_kinds == ["handler_start", "handler_end"] and validation == []
    elif outcome == "handler raises":
        assert handler_kinds == ["handler_start", "handler_error"] and validation == []
    else:
        assert handler_kinds == [] and validation == ["request"]


@settings(max_examples=100, deadline=None)
@given(outcomes=st.lists(st.sampled_from(["ok", "raises", "invalid"]), min_size=1, max_size=20))
def test_every_request_gets_a_unique_id_and_completes_its_lifecycle(outcomes: list[str]) -> None:
    """Property 3: Every request gets a unique request id and completes its whole lifecycle.

    Requests run concurrently, succeed or fail; each has its own valid id and a trace that runs
    from lifecycle_start to lifecycle_end, with its cleanup run.
    """

    async def handler(req: str, lctx: LocalContext, gctx: Any) -> str:
        await asyncio.sleep(0)
        if req == "raises":
            raise Boom(lctx.meta.request_id)
        return lctx.meta.request_id

    def validate_request(req: str) -> None:
        if req == "invalid":
            raise ValidationFailed("invalid", [])

    async def main() -> list[tuple[LocalContext, list[str]]]:
        runs = []
        for outcome in outcomes:
            lctx = LocalContext(make_meta())
            cleaned: list[str] = []
            lctx.on_cleanup(lambda cleaned=cleaned: cleaned.append("done"))
            runs.append((lctx, cleaned, outcome))
        results = await asyncio.gather(
            *(
                run_lifecycle(
                    LifecycleCall(
                        handler=handler, request=o, lctx=lctx, validate_request=validate_request
                    )
                )
                for lctx, _, o in runs
            ),
            return_exceptions=True,
        )
        for (lctx, _, outcome), result in zip(runs, results, strict=True):
            if outcome == "ok":
                assert result == lctx.meta.request_id
            else:
                assert isinstance(result, Boom | ValidationFailed)
        return [(lctx, cleaned) for lctx, cleaned, _ in runs]

    runs = asyncio.run(main())
    ids = [lctx.meta.request_id for lctx, _ in runs]
    assert len(set(ids)) == len(ids) and all(is_valid_request_id(i) for i in ids)
    for lctx, cleaned in runs:
        kinds = [e.kind for e in lctx.events]
        assert kinds[0] == "lifecycle_start" and kinds[-1] == "lifecycle_end"
        assert {e.request_id for e in lctx.events} == {lctx.meta.request_id}
        assert cleaned == ["done"]


@settings(max_examples=100, deadline=None)
@given(raising=st.lists(st.booleans(), min_size=2, max_size=8))
def test_a_raising_handler_runs_its_catch_hooks_and_fails_only_its_own_request(
    raising: list[bool],
) -> None:
    """Property 6: A raising handler runs its catch hooks and fails only its own request."""
    caught: list[str] = []

    def catch(lctx: LocalContext, req: Any, exc: BaseException) -> None:
        assert isinstance(exc, Boom) and str(exc) == lctx.meta.request_id
        caught.append(lctx.meta.request_id)

    async def handler(req: bool, lctx: LocalContext, gctx: Any) -> str:
        await asyncio.sleep(0)
        if req:
            raise Boom(lctx.meta.request_id)
        await asyncio.sleep(0)
        return f"done {lctx.meta.request_id}"

    async def main() -> tuple[list[LocalContext], list[Any]]:
        contexts = [LocalContext(make_meta()) for _ in raising]
        hooks = [HookSpec("catch", "catch", "global", catch)]
        results = await asyncio.gather(
            *(
                run_lifecycle(LifecycleCall(handler=handler, request=r, lctx=lctx, hooks=hooks))
                for r, lctx in zip(raising, contexts, strict=True)
            ),
            return_exceptions=True,
        )
        return contexts, results

    contexts, results = asyncio.run(main())
    for fails, lctx, result in zip(raising, contexts, results, strict=True):
        rid = lctx.meta.request_id
        if fails:
            assert isinstance(result, Boom) and str(result) == rid
        else:
            assert result == f"done {rid}"
    assert sorted(caught) == sorted(
        lctx.meta.request_id for fails, lctx in zip(raising, contexts, strict=True) if fails
    )


@settings(max_examples=100, deadline=None)
@given(
    deadline_ms=st.integers(min_value=1, max_value=25),
    sync_handler=st.booleans(),
    hooks_before=st.integers(min_value=0, max_value=2),
)
def test_a_handler_past_its_deadline_is_cancelled_and_cleans_up(
    deadline_ms: int, sync_handler: bool, hooks_before: int
) -> None:
    """Property 8: A handler past its deadline is cancelled, its cleanup runs, and the caller
    gets DEADLINE_EXCEEDED.

    Async handlers see the cancellation; a sync handler's thread is abandoned (and released
    afterwards) while the caller gets its answer at once.
    """
    release = threading.Event()
    log: list[str] = []

    async def async_handler(req: Any, lctx: LocalContext, gctx: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            log.append("cancelled")
            raise

    def blocking_handler(req: Any, lctx: LocalContext, gctx: Any) -> None:
        release.wait(timeout=5)

    async def main() -> tuple[BaseException | None, float, LocalContext]:
        lctx = LocalContext(make_meta(deadline=Deadline.after(deadline_ms / 1000)))
        lctx.on_cleanup(lambda: log.append("cleanup"))
        hooks = [
            HookSpec(f"before-{i}", "before", "module", lambda lctx, req: None)
            for i in range(hooks_before)
        ]
        call = LifecycleCall(
            handler=blocking_handler if sync_handler else async_handler,
            request={},
            lctx=lctx,
            hooks=hooks,
        )
        began = time.monotonic()
        error: BaseException | None = None
        try:
            await run_lifecycle(call)
        except DeadlineExceeded as exc:
            error = exc
        finally:
            release.set()  # let an abandoned handler thread finish so the loop can close
        return error, time.monotonic() - began, lctx

    error, elapsed, lctx = asyncio.run(main())
    assert error is not None and status_of(error).name == "DEADLINE_EXCEEDED"
    # Ended by the deadline, not by the handler finishing its 30 s: the bound is loose on purpose,
    # since a loaded machine can delay the wakeup; speed is for the benchmarks.
    assert elapsed < deadline_ms / 1000 + 10.0
    handler_ran = any(e.kind == "handler_start" for e in lctx.events)
    if handler_ran:
        assert [e.kind for e in lctx.events if e.kind.startswith("handler_")] == [
            "handler_start",
            "handler_error",
        ]
    assert log == (["cancelled", "cleanup"] if handler_ran and not sync_handler else ["cleanup"])


@settings(max_examples=100, deadline=None)
@given(
    is_async=st.booleans(),
    mode=st.sampled_from(["raises", "slow"]),
    bad_attempts=st.integers(min_value=0, max_value=3),
    retries=st.integers(min_value=0, max_value=3),
    phase=st.sampled_from(PHASES),
)
def test_hooks_sync_or_async_honour_timeout_and_retries(
    is_async: bool, mode: str, bad_attempts: int, retries: int, phase: str
) -> None:
    """Property 24: Hooks can be registered sync or async, with timeout and retries.

    A hook whose first ``bad_attempts`` attempts raise (or outlast a 100 ms timeout) succeeds
    on attempt ``bad_attempts + 1`` when the retries allow it, and otherwise fails the request
    after exactly ``retries + 1`` attempts.
    """
    attempts = 0
    release = threading.Event()

    def attempt_outcome() -> bool:
        """Count an attempt; True when this attempt should misbehave."""
        nonlocal attempts
        attempts += 1
        return attempts <= bad_attempts

    async def async_hook(*args: Any) -> None:
        if attempt_outcome():
            if mode == "raises":
                raise Boom("flaky")
            await asyncio.Event().wait()

    def sync_hook(*args: Any) -> None:
        if attempt_outcome():
            if mode == "raises":
                raise Boom("flaky")
            release.wait(timeout=5)

    spec = HookSpec(
        "h", phase, "handler", async_hook if is_async else sync_hook,  # type: ignore[arg-type]
        timeout=0.1 if mode == "slow" else 1.0, retries=retries,
    )  # fmt: skip
    assert spec.is_async is is_async

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> str:
        if phase == "catch":
            raise LookupError("to reach the catch hook")
        return "ok"

    async def main() -> Any:
        call = LifecycleCall(
            handler=handler, request={}, lctx=LocalContext(make_meta()), hooks=[spec]
        )
        try:
            return await run_lifecycle(call)
        except Exception as exc:
            return exc
        finally:
            release.set()  # let abandoned hook threads finish so the loop can close

    result = asyncio.run(main())
    hook_fails = bad_attempts > retries
    assert attempts == (retries + 1 if hook_fails else bad_attempts + 1)
    if phase == "catch":  # a failing catch hook never hides the original error
        assert isinstance(result, LookupError)
    elif hook_fails:
        expected = Boom if mode == "raises" else TimeoutError
        assert isinstance(result, expected)
    else:
        assert result == "ok"
