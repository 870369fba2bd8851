"""A deadline as a value on the monotonic clock.

Inside the runtime a call carries one :class:`Deadline`; it becomes a ``timeout=`` only at the
moment a gRPC call is made (:meth:`Deadline.timeout`). Deadlines combine with :func:`min`, so the
effective deadline of a nested call is ``min(caller_deadline, own_deadline)``.

    >>> d = Deadline.after(0.5)
    >>> 0 < d.remaining() <= 0.5
    True
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Clock", "Deadline", "Expiry"]

Clock = Callable[[], float]
"""A monotonic clock in seconds; tests pass their own instead of patching time."""


@dataclass(frozen=True, order=True, slots=True)
class Deadline:
    """An instant on a monotonic clock after which the work is pointless."""

    at: float
    clock: Clock = field(default=time.monotonic, compare=False, repr=False)

    @classmethod
    def after(cls, seconds: float, clock: Clock = time.monotonic) -> Deadline:
        """The deadline ``seconds`` from now."""
        return cls(clock() + seconds, clock)

    @classmethod
    def from_timeout(cls, seconds: float | None, clock: Clock = time.monotonic) -> Deadline | None:
        """Like :meth:`after`, but ``None`` (no timeout) stays ``None``."""
        return None if seconds is None else cls.after(seconds, clock)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - self.clock())

    def expired(self) -> bool:
        return self.clock() >= self.at

    def timeout(self) -> float:
        """The ``timeout=`` for a call made now: what is left of the deadline."""
        return self.remaining()

    @staticmethod
    def earliest(*deadlines: Deadline | None) -> Deadline | None:
        """The earliest of the deadlines given, ignoring ``None``; ``None`` when all are."""
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None


class Expiry:
    """A timer that cancels the running task when ``deadline`` passes: what ``asyncio.timeout``
    does, without its scope's bookkeeping, which costs a hot path a tenth of a cheap call.

        expiry = Expiry(deadline)
        try:
            return await work()
        except asyncio.CancelledError:
            if expiry.alone():
                ...  # the deadline passed, and nothing else cancelled the task
            raise
        finally:
            expiry.cancel()
    """

    __slots__ = ("_taken", "_timer", "fired", "task")

    def __init__(self, deadline: Deadline) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("an Expiry cancels a task: create it inside one")
        self.task: asyncio.Task[Any] = task
        self.fired = False
        """The timer went off (and cancelled the task)."""
        self._taken = False
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + deadline.remaining(), self._fire)

    def _fire(self) -> None:
        self.fired = True
        self.task.cancel()

    def alone(self) -> bool:
        """Whether the timer cancelled the task and nothing else did; takes the timer's
        cancellation back (what is left counts the task's other cancellers)."""
        if not self.fired:
            return False
        if self._taken:
            return self.task.cancelling() == 0
        self._taken = True
        return self.task.uncancel() == 0

    def cancel(self) -> None:
        """Stop the timer; a cancellation it made and nobody took back is taken back."""
        self._timer.cancel()
        if self.fired and not self._taken:
            self._taken = True
            self.task.uncancel()
