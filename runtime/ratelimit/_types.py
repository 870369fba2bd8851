"""The rate-limiting contract: a limit, a decision, and the one-method limiter interface."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter

from runtime.errors import ResourceExhausted

__all__ = ["Decision", "RateLimit", "RateLimiter", "check_rate"]

_MIN_RETRY_AFTER = 0.001


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A limit such as ``100/second`` or ``5 per minute``, parsed by the ``limits`` library.

    >>> limit = RateLimit.parse("100/second")
    >>> limit.amount, limit.period
    (100, 1)
    """

    text: str = field(compare=False)
    item: RateLimitItem = field(repr=False)
    """The parsed limit; equality goes by it, so ``5/minute`` equals ``5 per minute``."""

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``<count>/<period>`` (``10/second``, ``5 per 2 minutes``).

        A bad string raises ``ValueError`` with the text in the message, so manifest validators
        (pydantic) can report it against the key that held it.
        """
        try:
            item = parse(text)
        except ValueError as exc:
            raise ValueError(
                f"bad rate limit {text!r}: expected '<count>/<period>' such as '100/second' "
                "or '5 per minute'"
            ) from exc
        if item.amount <= 0:
            raise ValueError(f"bad rate limit {text!r}: the count must be at least 1")
        return cls(text=text.strip(), item=item)

    @property
    def amount(self) -> int:
        """Calls allowed per window."""
        return int(self.item.amount)

    @property
    def period(self) -> int:
        """The window, in seconds."""
        return int(self.item.get_expiry())

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one hit: allowed or not, how many calls are left, and when to retry."""

    allowed: bool
    remaining: int
    retry_after: float = 0.0
    """Seconds until a refused call could succeed; 0 when allowed."""


class RateLimiter(Protocol):
    """Counts hits per key against a limit. Backends: in-process memory and Redis."""

    async def hit(self, key: str, limit: RateLimit) -> Decision:
        """Record one call for ``key`` and say whether it is within ``limit``."""
        ...

    async def close(self) -> None:
        """Release connections and timers. Safe to call twice."""
        ...


async def check_rate(limiter: RateLimiter, key: str, limit: RateLimit) -> Decision:
    """Hit ``limiter``, raising :class:`~runtime.errors.ResourceExhausted` when over the limit.

    The error names the limit and carries ``retry_after`` for ``google.rpc.RetryInfo``. The key
    is left out of the message: it often holds a caller's identity.
    """
    decision = await limiter.hit(key, limit)
    if not decision.allowed:
        raise ResourceExhausted(
            f"rate limit {limit} exceeded; retry after {decision.retry_after:.3f}s",
            retry_after=decision.retry_after,
        )
    return decision


async def decide(strategy: MovingWindowRateLimiter, key: str, limit: RateLimit) -> Decision:
    """One moving-window hit through ``limits``, turned into a :class:`Decision`.

    The moving window is exact: within any span of ``limit.period`` seconds at most
    ``limit.amount`` hits are allowed. ``limits`` keeps its timestamps on the wall clock.
    """
    allowed = await strategy.hit(limit.item, key)
    stats = await strategy.get_window_stats(limit.item, key)
    return _decision(allowed, stats.remaining, stats.reset_time, limit)


def _decision(allowed: bool, remaining_slots: float, reset_time: float, limit: RateLimit) -> Decision:
    remaining = max(0, int(remaining_slots))
    if allowed:
        return Decision(True, remaining, 0.0)
    # reset_time is when the oldest hit in the window leaves it, freeing one slot.
    return refused(reset_time - time.time(), limit)


def refused(seconds_to_slot: float, limit: RateLimit) -> Decision:
    """A refusal whose caller may retry in ``seconds_to_slot`` (bounded to the limit's period)."""
    retry_after = max(_MIN_RETRY_AFTER, round(seconds_to_slot, 3))
    return Decision(False, 0, min(retry_after, float(limit.period)))
