"""Stopping the usage reporter writes the counts it has, even in the middle of a flush."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import runtime.gateway._usage as usage


async def test_stopping_mid_flush_loses_no_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    recorded: Counter[tuple[str, str]] = Counter()
    writing = asyncio.Event()

    async def slow_record(store: Any, module: str, counts: dict[str, int], now: float) -> None:
        writing.set()
        await asyncio.sleep(0.2)  # a store across the network
        for version, n in counts.items():
            recorded[(module, version)] += n

    monkeypatch.setattr(usage, "record_usage", slow_record)
    counts: Counter[tuple[str, str]] = Counter({("a", "v1"): 5, ("b", "v1"): 7})
    reporter = usage.UsageReporter(None, counts, interval=0.01)
    task = asyncio.create_task(reporter.run())
    async with asyncio.timeout(5):
        await writing.wait()  # inside a flush
    counts[("a", "v1")] += 3  # a call counted while the flush runs
    reporter.stop()
    async with asyncio.timeout(5):
        await task
    assert recorded == {("a", "v1"): 8, ("b", "v1"): 7}
    assert not counts
