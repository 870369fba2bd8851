"""The gateway's route-refresh loop ends when it is cancelled, whatever else happens that turn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from runtime.gateway import Gateway


async def test_the_refresh_loop_stops_when_cancelled_as_a_store_change_arrives(
    gw_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancellation in the turn the change event wakes the loop must not be lost.

    ``asyncio.wait_for`` on Python 3.11 returns normally in that case, and the loop then ran on
    with ``Gateway.stop`` waiting for it forever.
    """
    gateway = Gateway(gw_settings())
    refreshes: list[None] = []

    async def refresh() -> None:
        refreshes.append(None)

    monkeypatch.setattr(gateway, "refresh", refresh)
    task = asyncio.create_task(gateway._tick())
    await asyncio.sleep(0.01)  # the loop is waiting for a change
    gateway._changed.set()
    await asyncio.sleep(0)  # the change wakes the loop's wait in this turn...
    task.cancel()  # ...and the stop arrives in the same one
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(refreshes) <= 1  # at most the refresh the change asked for, and nothing after
