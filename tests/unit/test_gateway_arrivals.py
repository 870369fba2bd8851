"""Unary requests must arrive within their method's timeout (:class:`Arrivals`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from runtime.errors import DeadlineExceeded
from runtime.gateway._routes import Arrivals


class _Context:
    """A call whose request arrives when ``arrived`` is set (never, unless a test sets it)."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()

    async def read(self) -> bytes:
        await self.arrived.wait()
        return b"request"


async def test_a_request_that_does_not_arrive_in_time_ends_deadline_exceeded_and_the_call_goes_on() -> None:
    arrivals = Arrivals(interval=0.01)
    sweeper = asyncio.create_task(arrivals.run())
    try:
        with pytest.raises(DeadlineExceeded, match=r"did not arrive within 0\.05 s, the method's timeout"):
            await arrivals.read(cast(Any, _Context()), 0.05)
        await asyncio.sleep(0)  # the call is not left cancelled: it goes on to send its status
        context = _Context()
        context.arrived.set()
        assert await arrivals.read(cast(Any, context), 0.05) == b"request", "one that arrives in time is read"
    finally:
        sweeper.cancel()


async def test_a_caller_that_goes_away_is_still_a_cancellation() -> None:
    arrivals = Arrivals(interval=10)
    reading = asyncio.create_task(arrivals.read(cast(Any, _Context()), 0.01))
    await asyncio.sleep(0.05)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert arrivals.sweep(float("inf")) == 0, "nothing is left waiting"


async def test_only_reads_past_their_time_are_ended() -> None:
    arrivals = Arrivals(interval=10)
    late = asyncio.create_task(arrivals.read(cast(Any, _Context()), 0.0))
    patient = asyncio.create_task(arrivals.read(cast(Any, _Context()), 60.0))
    await asyncio.sleep(0.01)
    assert arrivals.sweep(time.monotonic() + 1) == 1
    with pytest.raises(DeadlineExceeded):
        await late
    assert not patient.done()
    patient.cancel()
