"""``gctx.clock``: the wall clock a handler reads, so a test can set and move it.

A handler that stamps records with ``gctx.clock.now()`` instead of ``datetime.now()`` can be
tested at any instant: :class:`runtime.testing.ManualClock` stands in for :class:`SystemClock`.
Deadlines and timeouts are not read from here: they run on the monotonic clock of the process.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """What ``gctx.clock`` offers: the current time as an aware UTC datetime and as seconds."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    def time(self) -> float:
        """The current time in seconds since the epoch."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()
