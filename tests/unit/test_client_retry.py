"""Retry policy as pure objects: the budget on an injected clock, backoff without sleeping."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from tenacity import RetryCallState

from runtime.client import RetryPolicy
from runtime.client._retry import RetryBudget, is_retryable, stop_before_deadline
from runtime.deadline import Deadline
from runtime.errors import (
    Unavailable,
)
from runtime.status import RpcStatus
from runtime.transport import CallError, Disconnected, Unreached


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def state(attempt: int, upcoming_sleep: float = 0.0) -> RetryCallState:
    retry_state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    retry_state.attempt_number = attempt
    retry_state.upcoming_sleep = upcoming_sleep
    return retry_state


# -- budget -------------------------------------------------------------------------------


def test_retries_are_capped_at_the_ratio_of_requests() -> None:
    budget = RetryBudget(ratio=0.2, min_retries_per_second=0, clock=FakeClock())
    for _ in range(10):
        budget.deposit()
    assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]


def test_deposits_expire_after_the_ttl() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0, ttl=10.0, clock=clock)
    budget.deposit()
    clock.now = 10.0
    assert budget.try_withdraw() is False


def test_deposits_inside_the_ttl_still_count() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0, ttl=10.0, clock=clock)
    budget.deposit()
    clock.now = 8.5
    assert budget.try_withdraw() is True


def test_the_minimum_rate_allows_retries_without_any_requests() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_retries_per_second=1.0, ttl=10.0, clock=clock)
    granted = [budget.try_withdraw() for _ in range(11)]
    assert granted == [True] * 10 + [False]
    clock.now = 10.0  # the withdrawals have left the window
    assert budget.try_withdraw() is True


def test_available_reports_the_retries_left() -> None:
    budget = RetryBudget(ratio=0.5, min_retries_per_second=0, clock=FakeClock())
    for _ in range(6):
        budget.deposit()
    assert budget.available() == 3.0
    budget.try_withdraw()
    assert budget.available() == 2.0


def test_a_budget_refuses_nonsense_parameters() -> None:
    with pytest.raises(ValueError):
        RetryBudget(ratio=-0.1)
    with pytest.raises(ValueError):
        RetryBudget(ttl=0)


# -- what is retryable --------------------------------------------------------------------


def failed(code: grpc.StatusCode) -> CallError:
    return CallError(RpcStatus(code, code.name))


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (failed(grpc.StatusCode.UNAVAILABLE), True),
        (Disconnected("connection lost"), True),
        (failed(grpc.StatusCode.DEADLINE_EXCEEDED), False),
        (failed(grpc.StatusCode.RESOURCE_EXHAUSTED), False),
        (failed(grpc.StatusCode.NOT_FOUND), False),
        (failed(grpc.StatusCode.CANCELLED), False),
        (failed(grpc.StatusCode.INTERNAL), False),
        (Unavailable("a runtime error, not a failed call"), False),
        (asyncio.CancelledError(), False),
        (KeyboardInterrupt(), False),
    ],
)
def test_only_unavailable_is_retryable_and_only_when_idempotent(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error, idempotent=True) is retryable
    assert is_retryable(error, idempotent=False) is False


def test_a_call_that_reached_nobody_is_retryable_whatever_its_idempotency() -> None:
    assert is_retryable(Unreached("connection refused"), idempotent=False)
    assert is_retryable(Unreached("connection refused"), idempotent=True)


# -- backoff ------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 8, 20])
def test_backoff_is_full_jitter_within_an_exponential_window(attempt: int) -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0)
    wait = policy.wait()
    window = min(1.0, 0.1 * 2 ** (attempt - 1))
    samples = [wait(state(attempt)) for _ in range(500)]
    assert all(0.0 <= sample <= window for sample in samples)
    # Full jitter: the whole window is used, not just its top.
    assert min(samples) < window / 4
    assert max(samples) > window * 3 / 4


def test_stop_before_deadline_refuses_a_sleep_that_reaches_the_deadline() -> None:
    clock = FakeClock()
    stop = stop_before_deadline(Deadline.after(0.5, clock))
    assert stop(state(1, upcoming_sleep=0.4)) is False
    assert stop(state(1, upcoming_sleep=0.5)) is True
    assert stop(state(1, upcoming_sleep=0.6)) is True
    assert stop_before_deadline(None)(state(1, upcoming_sleep=1e9)) is False


async def test_retrying_sleeps_through_the_injected_sleep_and_returns_the_result() -> None:
    policy = RetryPolicy(max_attempts=4, initial_backoff=0.1, max_backoff=0.3)
    sleep = RecordingSleep()
    budget = RetryBudget(clock=FakeClock())
    failures = iter([failed(grpc.StatusCode.UNAVAILABLE), failed(grpc.StatusCode.UNAVAILABLE)])

    async def flaky() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "ok"

    result = await policy.retrying(deadline=None, budget=budget, idempotent=True, sleep=sleep)(flaky)
    assert result == "ok"
    assert len(sleep.delays) == 2
    assert 0 <= sleep.delays[0] <= 0.1
    assert 0 <= sleep.delays[1] <= 0.2


async def test_cancellation_is_never_retried() -> None:
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    retrying = RetryPolicy(max_attempts=5).retrying(deadline=None, budget=RetryBudget(), idempotent=True, sleep=RecordingSleep())
    with pytest.raises(asyncio.CancelledError):
        await retrying(cancelled)
    assert calls == 1


async def test_the_budget_is_charged_only_for_retries_that_happen() -> None:
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.5, ttl=10.0, clock=FakeClock())  # 5 retries
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise failed(grpc.StatusCode.UNAVAILABLE)

    retrying = RetryPolicy(max_attempts=2).retrying(deadline=None, budget=budget, idempotent=True, sleep=RecordingSleep())
    with pytest.raises(CallError):
        await retrying(down)
    assert calls == 2
    assert budget.available() == 4.0


async def test_no_retry_is_made_when_the_backoff_would_pass_the_deadline() -> None:
    clock = FakeClock()
    deadline = Deadline.after(0.001, clock)
    policy = RetryPolicy(max_attempts=5, initial_backoff=10.0, max_backoff=10.0)
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        clock.now += 0.001  # the attempt used up the deadline
        raise failed(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(CallError):
        await policy.retrying(deadline=deadline, budget=RetryBudget(), idempotent=True, sleep=RecordingSleep())(down)
    assert calls == 1


def test_a_policy_refuses_nonsense_parameters() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(initial_backoff=2.0, max_backoff=1.0)


def test_the_window_grows_by_the_policys_own_multiplier() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=10.0, multiplier=3.0)
    wait = policy.wait()
    for attempt, window in [(1, 0.1), (2, 0.3), (3, 0.9)]:
        state = RetryCallState(None, None, (), {})
        state.attempt_number = attempt
        delays = [wait(state) for _ in range(300)]
        assert max(delays) <= window + 1e-9
        assert max(delays) > window * 0.8


def test_a_manifest_retry_table_becomes_the_policy() -> None:
    from runtime.manifest import RetryPolicy as ManifestRetry

    policy = RetryPolicy.from_manifest(
        ManifestRetry(attempts=5, initial_backoff=0.2, max_backoff=2.0, backoff_multiplier=3.0)
    )
    assert (policy.max_attempts, policy.initial_backoff, policy.max_backoff, policy.multiplier) == (5, 0.2, 2.0, 3.0)
