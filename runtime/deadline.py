"""A deadline as a value on the monotonic clock.

Inside the runtime a call carries one :class:`Deadline`; it becomes a ``timeout=`` only at the
moment a gRPC call is made (:meth:`Deadline.timeout`). Deadlines combine with :func:`min`, so the
effective deadline of a nested call is ``min(caller_deadline, own_deadline)``.

    >>> d = Deadline.after(0.5)
    >>> 0 < d.remaining() <= 0.5
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Clock", "Deadline"]

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
