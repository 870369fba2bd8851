"""Expiry: the timer that cancels a task at its deadline, and tells its cancellation from others."""

from __future__ import annotations

import asyncio

import pytest

from runtime.deadline import Deadline, Expiry


async def test_the_deadline_cancels_the_task_and_says_it_was_alone() -> None:
    expiry = Expiry(Deadline.after(0.01))
    with pytest.raises(asyncio.CancelledError):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            assert expiry.fired and expiry.alone()
            raise
        finally:
            expiry.cancel()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_another_cancellation_at_the_same_time_is_not_the_deadlines_alone() -> None:
    expiries: list[Expiry] = []

    async def work() -> bool:
        expiry = Expiry(Deadline.after(60))
        expiries.append(expiry)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return expiry.fired and not expiry.alone() and asyncio.current_task().cancelling() == 1  # type: ignore[union-attr]
        finally:
            expiry.cancel()
        return False

    task = asyncio.create_task(work())
    await asyncio.sleep(0)
    expiries[0]._fire()  # the timer goes off (as at its deadline), and in the same turn
    task.cancel()  # the caller goes away
    assert await task


async def test_work_done_in_time_is_never_cancelled() -> None:
    expiry = Expiry(Deadline.after(0.05))
    await asyncio.sleep(0)
    expiry.cancel()
    await asyncio.sleep(0.1)  # past the deadline: nothing happens
    assert not expiry.fired
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_cancellation_the_work_swallowed_is_taken_back_when_the_timer_stops() -> None:
    expiry = Expiry(Deadline.after(0.01))
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        pass  # work that swallows it and goes on
    expiry.cancel()
    assert expiry.fired
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
