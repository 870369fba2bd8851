"""Retry policy for module calls, built from tenacity's small strategy objects.

A failed call is tried again only when all of these hold:

* it never reached anyone (:class:`~runtime.transport.Unreached`: nothing was sent, so any call
  may go elsewhere), or the method is idempotent (the manifest says so) and either the failure
  is ``UNAVAILABLE`` (the worker went away, or said it cannot serve right now) or the attempt
  ran out of its own ``per_try_timeout`` while the call's deadline had time left
  (:class:`AttemptTimedOut`: the instance hangs or is slow, another may answer in time).
  ``DEADLINE_EXCEEDED`` of the call's own deadline is not retried, because the deadline is
  shared by every attempt and is already spent; neither is anything else, and
  ``asyncio.CancelledError`` never is;
* attempts remain (``stop_after_attempt``);
* the backoff sleep ends before the caller's deadline (:class:`stop_before_deadline`);
* the module's :class:`RetryBudget` has a retry to spend.

Backoff is tenacity's ``wait_random_exponential``: exponential growth with full jitter, so a
crowd of clients that failed together does not come back together. A method's own policy comes
from the ``retry`` table of its ``module.toml`` (:meth:`RetryPolicy.from_manifest`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_random_exponential

from runtime.deadline import Clock, Deadline
from runtime.status import RpcStatus
from runtime.transport import CallError, TransportError, Unreached

if TYPE_CHECKING:
    from runtime.manifest import RetryPolicy as ManifestRetry

__all__ = [
    "AttemptTimedOut",
    "RetryBudget",
    "RetryPolicy",
    "Sleep",
    "is_retryable",
    "stop_before_deadline",
    "stop_when_budget_spent",
]

Sleep = Callable[[float], Awaitable[None]]
"""How a retry waits; tests pass one that records instead of sleeping."""

_UNITS = 1000
"""Budget arithmetic is done in integer thousandths of a retry, so 0.2 x 5 is exactly 1."""


class RetryBudget:
    """A token bucket that caps retries at a fraction of requests (Finagle/Envoy style).

    Every request deposits ``ratio`` of a retry; every retry withdraws one. Deposits and
    withdrawals count for ``ttl`` seconds, and a reserve of ``min_retries_per_second * ttl``
    retries is always on top, so a quiet client can still retry a little. With the defaults,
    retries add at most 20% to the load a failing worker sees, which is what stops retry storms.

        >>> budget = RetryBudget(ratio=0.5, min_retries_per_second=0, clock=lambda: 0.0)
        >>> budget.deposit(); budget.deposit()
        >>> budget.try_withdraw(), budget.try_withdraw()
        (True, False)
    """

    __slots__ = ("_clock", "_deposit", "_reserve", "_slot_width", "_slots", "_total", "_window")

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_retries_per_second: float = 10.0,
        ttl: float = 10.0,
        clock: Clock = time.monotonic,
        slots: int = 10,
    ) -> None:
        if ratio < 0 or min_retries_per_second < 0 or ttl <= 0 or slots < 1:
            raise ValueError("ratio and min_retries_per_second must be >= 0; ttl and slots > 0")
        self._deposit = round(ratio * _UNITS)
        self._reserve = round(min_retries_per_second * ttl * _UNITS)
        self._slot_width = ttl / slots
        self._slots = slots
        self._clock = clock
        self._window: deque[list[int]] = deque()  # [slot index, units added in that slot]
        self._total = 0

    def _add(self, units: int) -> None:
        slot = int(self._clock() // self._slot_width)
        self._expire(slot)
        if self._window and self._window[-1][0] == slot:
            self._window[-1][1] += units
        else:
            self._window.append([slot, units])
        self._total += units

    def _expire(self, slot: int) -> None:
        oldest_kept = slot - self._slots + 1
        while self._window and self._window[0][0] < oldest_kept:
            self._total -= self._window.popleft()[1]

    def deposit(self) -> None:
        """Count one request (an original call, not a retry)."""
        self._add(self._deposit)

    def try_withdraw(self) -> bool:
        """Spend one retry if the budget allows it; ``False`` means do not retry."""
        self._expire(int(self._clock() // self._slot_width))
        if self._reserve + self._total < _UNITS:
            return False
        self._add(-_UNITS)
        return True

    def available(self) -> float:
        """How many retries the budget would allow right now."""
        self._expire(int(self._clock() // self._slot_width))
        return max(0, self._reserve + self._total) / _UNITS


class AttemptTimedOut(TransportError):
    """One attempt used up its ``per_try_timeout`` and was abandoned; the call's deadline was not
    reached, so an idempotent call may be tried again on another instance. Its status is
    DEADLINE_EXCEEDED: what the caller sees if no attempt is left."""

    def __init__(self, details: str) -> None:
        super().__init__(RpcStatus(grpc.StatusCode.DEADLINE_EXCEEDED, details))


def is_retryable(exc: BaseException, *, idempotent: bool) -> bool:
    """Whether a failed attempt may be tried again; cancellation never may.

        >>> is_retryable(Unreached("connection refused"), idempotent=False)
        True
        >>> is_retryable(AttemptTimedOut("no answer within 0.3s"), idempotent=True)
        True
    """
    if isinstance(exc, Unreached):
        return True
    if not idempotent or not isinstance(exc, CallError):
        return False
    return exc.code == grpc.StatusCode.UNAVAILABLE or isinstance(exc, AttemptTimedOut)


class stop_before_deadline(stop_base):  # lower-case, like tenacity's own strategies
    """Stop when the backoff sleep would reach the caller's deadline: no attempt after it."""

    def __init__(self, deadline: Deadline | None) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.deadline is not None and retry_state.upcoming_sleep >= self.deadline.remaining()


class stop_when_budget_spent(stop_base):
    """Stop when the retry budget is empty. Asking *spends* a retry when there is one.

    It must come last in a ``|`` chain: tenacity's ``stop_any`` evaluates left to right and stops
    at the first true condition, so the budget is only charged for a retry that will happen.
    """

    def __init__(self, budget: RetryBudget) -> None:
        self.budget = budget

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not self.budget.try_withdraw()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a module client retries idempotent calls, and how large its retry budget is."""

    max_attempts: int = 3
    """Attempts in total, the first included; 1 turns retries off."""
    initial_backoff: float = 0.05
    """Seconds: the jitter window after the first failure."""
    max_backoff: float = 1.0
    """Seconds: the jitter window never grows past this."""
    multiplier: float = 2.0
    """How much the jitter window grows after each failure."""
    budget_ratio: float = 0.2
    """Retries may add at most this fraction on top of requests, per module."""
    budget_min_per_second: float = 10.0
    """Retries always allowed per second, whatever the request count."""
    budget_ttl: float = 10.0
    """Seconds over which the budget counts requests and retries."""
    per_try_timeout: float | None = None
    """Seconds one attempt of an idempotent call may take before it is abandoned and retried
    (Envoy's ``per_try_timeout``); None: each attempt may use what is left of the deadline."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.per_try_timeout is not None and self.per_try_timeout <= 0:
            raise ValueError("per_try_timeout must be positive")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("backoff must satisfy 0 <= initial_backoff <= max_backoff")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")

    @classmethod
    def from_manifest(cls, retry: ManifestRetry) -> RetryPolicy:
        """The policy a method's ``[methods.<M>.retry]`` table in ``module.toml`` asks for."""
        return cls(
            max_attempts=retry.attempts,
            initial_backoff=retry.initial_backoff,
            max_backoff=retry.max_backoff,
            multiplier=retry.backoff_multiplier,
            per_try_timeout=retry.per_try_timeout,
        )

    def wait(self) -> wait_random_exponential:
        """The backoff strategy: full jitter over an exponentially growing window.

        After failure ``n`` (1, 2, ...) the wait is uniform in
        ``[0, min(max_backoff, initial_backoff * multiplier ** (n - 1))]``.
        """
        return wait_random_exponential(
            multiplier=self.initial_backoff, max=self.max_backoff, exp_base=self.multiplier
        )

    def budget(self, clock: Clock = time.monotonic) -> RetryBudget:
        """A fresh retry budget with this policy's parameters."""
        return RetryBudget(
            ratio=self.budget_ratio,
            min_retries_per_second=self.budget_min_per_second,
            ttl=self.budget_ttl,
            clock=clock,
        )

    def retrying(
        self,
        *,
        deadline: Deadline | None,
        budget: RetryBudget,
        idempotent: bool,
        sleep: Sleep = asyncio.sleep,
    ) -> AsyncRetrying:
        """A tenacity controller for ONE call (tenacity keeps per-run state on the object).

        The last error is re-raised as is, not wrapped in tenacity's ``RetryError``.
        """
        return AsyncRetrying(
            sleep=sleep,
            stop=stop_after_attempt(self.max_attempts)
            | stop_before_deadline(deadline)
            | stop_when_budget_spent(budget),
            wait=self.wait(),
            retry=retry_if_exception(lambda exc: is_retryable(exc, idempotent=idempotent)),
            reraise=True,
        )

