"""One contract for every rate-limit backend, run against memory and a real Redis, plus the
Redis-only guarantee: several limiters (gateways) on one Redis share one limit."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import ResourceExhausted, Unavailable
from runtime.ratelimit import RateLimit, RateLimiter, check_rate
from runtime.ratelimit._memory import MemoryRateLimiter
from runtime.ratelimit._redis import RedisRateLimiter
from tests.services import require_redis


def _prefix() -> str:
    """A key prefix of our own, so runs and tests never share counters."""
    return f"modrpc-test:{uuid.uuid4().hex}"


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    backend: RateLimiter
    if request.param == "memory":
        backend = MemoryRateLimiter()
    else:
        backend = RedisRateLimiter(require_redis(), key_prefix=_prefix(), failure_mode="closed")
    yield backend
    await backend.close()


async def test_allows_up_to_the_limit_then_refuses(limiter: RateLimiter) -> None:
    limit = RateLimit.parse("4/minute")
    decisions = [await limiter.hit("user-1", limit) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 4 + [False] * 2
    assert [d.remaining for d in decisions[:4]] == [3, 2, 1, 0]
    assert all(0 < d.retry_after <= 60 for d in decisions[4:])


async def test_keys_are_independent(limiter: RateLimiter) -> None:
    limit = RateLimit.parse("1/minute")
    assert (await limiter.hit("a", limit)).allowed
    assert (await limiter.hit("b", limit)).allowed
    assert not (await limiter.hit("a", limit)).allowed


async def test_concurrent_hits_never_overshoot(limiter: RateLimiter) -> None:
    limit = RateLimit.parse("10/minute")
    decisions = await asyncio.gather(*(limiter.hit("burst", limit) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10


async def test_calls_are_allowed_again_once_the_window_has_moved(limiter: RateLimiter) -> None:
    limit = RateLimit.parse("2/second")
    assert (await limiter.hit("w", limit)).allowed
    assert (await limiter.hit("w", limit)).allowed
    refused = await limiter.hit("w", limit)
    assert not refused.allowed
    await asyncio.sleep(refused.retry_after + 0.05)
    assert (await limiter.hit("w", limit)).allowed


async def test_check_rate_turns_refusal_into_resource_exhausted(limiter: RateLimiter) -> None:
    limit = RateLimit.parse("1/minute")
    await check_rate(limiter, "k", limit)
    with pytest.raises(ResourceExhausted, match="rate limit 1/minute exceeded") as caught:
        await check_rate(limiter, "k", limit)
    assert caught.value.retry_after is not None and caught.value.retry_after > 0


async def test_close_is_idempotent_and_final(limiter: RateLimiter) -> None:
    await limiter.close()
    await limiter.close()
    with pytest.raises(Unavailable):
        await limiter.hit("k", RateLimit.parse("1/second"))


async def test_two_limiters_on_one_redis_share_one_limit() -> None:
    url = require_redis()
    prefix = _prefix()
    limit = RateLimit.parse("5/minute")
    async with (
        RedisRateLimiter(url, key_prefix=prefix) as gateway_a,
        RedisRateLimiter(url, key_prefix=prefix) as gateway_b,
    ):
        results = []
        for i in range(8):
            gateway = gateway_a if i % 2 == 0 else gateway_b
            results.append((await gateway.hit("shared-caller", limit)).allowed)
        concurrent = await asyncio.gather(
            *(g.hit("burst", limit) for g in (gateway_a, gateway_b) for _ in range(10))
        )
    assert results == [True] * 5 + [False] * 3
    assert sum(d.allowed for d in concurrent) == 5


limits = st.builds(
    lambda amount, period: RateLimit.parse(f"{amount}/{period}"),
    st.integers(1, 20),
    st.sampled_from(["minute", "2 minutes"]),  # short TTLs: test keys leave Redis soon
)


@settings(max_examples=100, deadline=None)
@given(limit=limits, hits=st.lists(st.sampled_from("abc"), min_size=1, max_size=40))
def test_redis_enforces_limits_for_any_hit_sequence(limit: RateLimit, hits: list[str]) -> None:
    """Property 34: Rate limits are enforced (Redis backend).

    Same statement as the in-process run: within one window each key gets exactly
    ``min(hits, limit)`` calls through, and every refusal has ``0 < retry_after <= period``.
    """
    url = require_redis()

    async def run() -> None:
        allowed: Counter[str] = Counter()
        seen: Counter[str] = Counter()
        async with RedisRateLimiter(url, key_prefix=_prefix(), failure_mode="closed") as limiter:
            for key in hits:
                seen[key] += 1
                decision = await limiter.hit(key, limit)
                assert decision.allowed == (seen[key] <= limit.amount)
                allowed[key] += decision.allowed
                if not decision.allowed:
                    assert 0 < decision.retry_after <= limit.period
        assert all(allowed[k] == min(n, limit.amount) for k, n in seen.items())

    asyncio.run(run())
