"""LocalContext on its own: state, scoped events, hook registration, tasks."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from runtime.errors import SchemaError
from runtime.lcc import HookSpec, LifecycleCall, LocalContext, RequestMeta, run_lifecycle


def make_lctx(request_id: str = "r-1") -> LocalContext:
    return LocalContext(
        RequestMeta(
            request_id=request_id,
            handler="shop.Order",
            method="/shop.v1.Shop/Order",
            version="2025-06-01",
        )
    )


def test_state_get_set_delete_clear_and_contains() -> None:
    lctx = make_lctx()
    assert lctx.get("k") is None and lctx.get("k", 7) == 7
    lctx.set("k", [1])
    lctx.set("j", "x")
    assert "k" in lctx and lctx.get("k") == [1]
    assert lctx.delete("k") is True
    assert lctx.delete("k") is False
    assert "k" not in lctx and dict(lctx.state) == {"j": "x"}
    lctx.clear()
    assert dict(lctx.state) == {}


def test_state_view_is_read_only() -> None:
    lctx = make_lctx()
    lctx.set("a", 1)
    with pytest.raises(TypeError):
        lctx.state["a"] = 2  # type: ignore[index]


async def test_publish_reaches_sync_and_async_listeners_in_order() -> None:
    lctx = make_lctx()
    got: list[tuple[str, Any]] = []

    def sync_listener(payload: Any) -> None:
        got.append(("sync", payload))

    async def async_listener(payload: Any) -> None:
        await asyncio.sleep(0)
        got.append(("async", payload))

    lctx.subscribe("reserved", sync_listener)
    unsubscribe = lctx.subscribe("reserved", async_listener)
    assert await lctx.publish("reserved", {"sku": "a"}) == 2
    assert await lctx.publish("other", 1) == 0
    unsubscribe()
    unsubscribe()  # safe twice
    assert await lctx.publish("reserved", 2) == 1
    assert got == [("sync", {"sku": "a"}), ("async", {"sku": "a"}), ("sync", 2)]


async def test_a_failing_listener_reaches_the_publisher() -> None:
    lctx = make_lctx()

    def broken(payload: Any) -> None:
        raise KeyError(payload)

    lctx.subscribe("e", broken)
    with pytest.raises(KeyError):
        await lctx.publish("e", "x")


def test_add_hook_records_a_request_level_spec_with_id_and_source() -> None:
    lctx = make_lctx()

    def check(lctx: LocalContext, req: Any) -> None: ...

    spec = lctx.add_hook("before", check, timeout=0.5, retries=2)
    assert lctx.hooks == (spec,)
    assert (spec.level, spec.phase, spec.timeout, spec.retries) == ("request", "before", 0.5, 2)
    assert spec.id.endswith("check")
    assert spec.source.endswith(f"test_lcc_context.py:{check.__code__.co_firstlineno}")
    assert spec.is_async is False
    assert spec.to_json() == {
        "id": spec.id,
        "phase": "before",
        "level": "request",
        "is_async": False,
        "timeout": 0.5,
        "retries": 2,
        "source": spec.source,
    }


def test_hook_kind_sync_or_async_is_detected_through_partials_and_callables() -> None:
    async def async_hook(extra: int, lctx: Any, req: Any) -> None: ...

    class Callable:
        async def __call__(self, lctx: Any, req: Any) -> None: ...

    assert HookSpec.of(functools.partial(async_hook, 1), "before", "global").is_async
    assert HookSpec.of(Callable(), "before", "global", id="obj").is_async


@pytest.mark.parametrize(
    ("phase", "fn"),
    [
        ("before", lambda lctx: None),
        ("before", lambda lctx, req, resp: None),
        ("after", lambda lctx, req: None),
        ("catch", lambda lctx, req, exc, more: None),
        ("before", lambda *, lctx, req: None),
    ],
)
def test_a_hook_with_the_wrong_signature_is_refused_at_registration(phase: Any, fn: Any) -> None:
    with pytest.raises(SchemaError, match=rf"{phase} hook 'bad' must be callable as fn\(lctx, req"):
        make_lctx().add_hook(phase, fn, id="bad")


def test_hooks_taking_extra_defaults_or_varargs_are_accepted() -> None:
    lctx = make_lctx()
    lctx.add_hook("after", lambda lctx, req, resp, extra=1: None)
    lctx.add_hook("catch", lambda *args: None)
    assert len(lctx.hooks) == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"phase": "around"}, "phase"),
        ({"level": "process"}, "level"),
        ({"retries": -1}, "retries"),
        ({"retries": True}, "retries"),
        ({"timeout": 0}, "timeout"),
        ({"id": ""}, "empty id"),
        ({"fn": 42}, "not callable"),
    ],
)
def test_invalid_hook_specs_are_refused(changes: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "id": "h",
        "phase": "before",
        "level": "module",
        "fn": lambda lctx, req: None,
    }
    fields.update(changes)
    with pytest.raises(SchemaError, match=message):
        HookSpec(**fields)


async def test_spawned_tasks_report_pending_done_failed_and_cancelled() -> None:
    lctx = make_lctx()
    gate = asyncio.Event()

    async def ok() -> int:
        return 1

    async def boom() -> None:
        raise RuntimeError("boom")

    lctx.spawn(ok(), name="ok")
    lctx.spawn(boom(), name="boom")
    cancelled = lctx.spawn(gate.wait(), name="cancelled")
    pending = lctx.spawn(gate.wait())
    cancelled.cancel()
    await asyncio.sleep(0.01)
    assert lctx.task_status() == {
        "ok": "done",
        "boom": "failed",
        "cancelled": "cancelled",
        "task-4": "pending",
    }
    gate.set()
    await pending
    assert lctx.task_status()["task-4"] == "done"


async def test_spawning_two_tasks_with_one_name_is_refused() -> None:
    lctx = make_lctx()
    lctx.spawn(asyncio.sleep(0), name="x")
    with pytest.raises(ValueError, match="already has a task named 'x'"):
        lctx.spawn(asyncio.sleep(0), name="x")
    await asyncio.sleep(0.001)


async def test_a_local_context_runs_one_request_only() -> None:
    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> int:
        return 1

    lctx = make_lctx()
    assert await run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=lctx)) == 1
    with pytest.raises(RuntimeError, match="single-use"):
        await run_lifecycle(LifecycleCall(handler=handler, request={}, lctx=lctx))
