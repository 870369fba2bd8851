"""``run_chain`` and ``TransformStep``: hop limits, failures, time limits and cancellation."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from runtime.errors import DeadlineExceeded, FailedPrecondition, InternalError, InvalidArgument
from runtime.versions import run_chain
from runtime.versions._chain import MAX_HOPS, Transformer, TransformStep


def _step(
    i: int, *, forward: Transformer | None = None, backward: Transformer | None = None
) -> TransformStep:
    return TransformStep(
        "users",
        f"v{i}",
        f"v{i + 1}",
        forward={"CreateUser": forward} if forward else {},
        backward={"CreateUser": backward} if backward else {},
    )


def _count(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "hops": data["hops"] + 1}



async def test_ten_hops_are_allowed() -> None:
    steps = [_step(i, forward=_count) for i in range(MAX_HOPS)]
    assert await run_chain(steps, "CreateUser", {"hops": 0}, direction="forward") == {"hops": 10}


@pytest.mark.parametrize("direction", ["forward", "backward"])
async def test_eleven_hops_are_refused_before_any_runs(direction: str) -> None:
    ran: list[int] = []

    def record(data: dict[str, Any]) -> dict[str, Any]:
        ran.append(1)
        return data

    steps = [_step(i, forward=record, backward=record) for i in range(MAX_HOPS + 1)]
    with pytest.raises(FailedPrecondition, match="needs 11 transformer hops; at most 10"):
        await run_chain(steps, "CreateUser", {}, direction=direction)
    assert ran == []


async def test_a_method_with_no_transformer_passes_through_untouched() -> None:
    steps = [_step(0, forward=_count), _step(1)]
    assert await run_chain(steps, "GetUser", {"hops": 0}, direction="forward") == {"hops": 0}
    assert await run_chain(steps, "CreateUser", {"hops": 0}, direction="backward") == {"hops": 0}


async def test_a_failing_hop_is_internal_error_and_the_log_names_the_hop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("name")

    steps = [_step(0, forward=_count), _step(1, forward=broken)]
    with (
        caplog.at_level(logging.ERROR, logger="modrpc.versions"),
        pytest.raises(InternalError) as caught,
    ):
        await run_chain(steps, "CreateUser", {"hops": 0}, direction="forward")
    assert "users v1 -> v2 forward CreateUser" in caught.value.message
    assert isinstance(caught.value.__cause__, KeyError)
    (record,) = [r for r in caplog.records if r.name == "modrpc.versions"]
    assert "users v1 -> v2 forward CreateUser" in record.getMessage()
    assert record.exc_info is not None


async def test_a_hop_that_returns_no_object_is_internal_error() -> None:
    with pytest.raises(InternalError, match="returned no object"):
        await run_chain(
            [_step(0, backward=lambda data: None)], "CreateUser", {}, direction="backward"
        )


async def test_an_expected_error_from_a_hop_reaches_the_caller_as_it_is() -> None:
    def refuse(data: dict[str, Any]) -> dict[str, Any]:
        raise InvalidArgument("name: cannot be split")

    with pytest.raises(InvalidArgument, match="cannot be split"):
        await run_chain([_step(0, forward=refuse)], "CreateUser", {}, direction="forward")


async def test_an_async_hop_over_its_time_limit_is_cancelled_and_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancelled = asyncio.Event()

    async def slow(data: dict[str, Any]) -> dict[str, Any]:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return data

    started = time.monotonic()
    with (
        caplog.at_level(logging.ERROR, logger="modrpc.versions"),
        pytest.raises(InternalError, match="timed out"),
    ):
        await run_chain(
            [_step(0, forward=slow)], "CreateUser", {}, direction="forward", hop_timeout=0.02
        )
    assert time.monotonic() - started < 1.0
    assert cancelled.is_set()
    assert any("users v0 -> v1 forward CreateUser" in r.getMessage() for r in caplog.records)


async def test_a_plain_hop_over_its_time_limit_has_its_result_refused() -> None:
    def slow(data: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.03)
        return data

    with pytest.raises(InternalError, match="timed out"):
        await run_chain(
            [_step(0, backward=slow)], "CreateUser", {}, direction="backward", hop_timeout=0.005
        )


async def test_the_callers_deadline_shortens_the_hop_limit() -> None:
    async def slow(data: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(5)
        return data

    started = time.monotonic()
    with pytest.raises(InternalError, match="timed out"):
        await run_chain(
            [_step(0, forward=slow)],
            "CreateUser",
            {},
            direction="forward",
            hop_timeout=5,
            deadline_remaining=lambda: 0.02,
        )
    assert time.monotonic() - started < 1.0


async def test_a_deadline_already_passed_is_deadline_exceeded_naming_the_step() -> None:
    with pytest.raises(DeadlineExceeded, match=r"CreateUser \(users v0 -> v1\)"):
        await run_chain(
            [_step(0, forward=_count)],
            "CreateUser",
            {"hops": 0},
            direction="forward",
            deadline_remaining=lambda: 0.0,
        )


async def test_cancelling_the_call_cancels_the_hop_and_is_not_swallowed() -> None:
    entered = asyncio.Event()

    async def waits(data: dict[str, Any]) -> dict[str, Any]:
        entered.set()
        await asyncio.sleep(5)
        return data

    task = asyncio.create_task(
        run_chain([_step(0, forward=waits)], "CreateUser", {}, direction="forward", hop_timeout=5)
    )
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


SOURCE = """
FROM = "v0"
TO = "v1"

def forward_create_user_request(request):
    return {**request, "stage": "forward"}

def backward_get_user_response(response):
    return {**response, "stage": "backward"}

helper = 3  # not callable, and not named after a method: ignored
"""


async def test_a_step_built_from_source_picks_up_functions_by_method() -> None:
    step = TransformStep.from_source(
        "users", "v0", "v1", SOURCE, methods=["CreateUser", "GetUser"], origin="<test>"
    )
    assert set(step.forward) == {"CreateUser"} and set(step.backward) == {"GetUser"}
    assert step.name == "users v0 -> v1"
    assert await run_chain([step], "CreateUser", {}, direction="forward") == {"stage": "forward"}
    assert await run_chain([step], "GetUser", {}, direction="backward") == {"stage": "backward"}


def test_a_step_whose_source_fails_to_load_is_internal_error_naming_its_origin() -> None:
    with pytest.raises(InternalError, match="<users transformers v1> failed to load"):
        TransformStep.from_source(
            "users", "v0", "v1", "def broken(:\n", methods=[], origin="<users transformers v1>"
        )
