"""The in-process rate limiter, limit parsing, and the RESOURCE_EXHAUSTED helper."""

from __future__ import annotations

import grpc
import pytest

from runtime.config import mask_url
from runtime.errors import InvalidArgument, ResourceExhausted, Unavailable, status_of
from runtime.ratelimit import Decision, RateLimit, check_rate, open_ratelimiter
from runtime.ratelimit._memory import MemoryRateLimiter
from runtime.ratelimit._redis import RedisRateLimiter


@pytest.mark.parametrize(
    ("text", "amount", "period"),
    [
        ("100/second", 100, 1),
        ("5 per minute", 5, 60),
        ("10/hour", 10, 3600),
        ("3/2 minutes", 3, 120),
        ("7/day", 7, 86400),
    ],
)
def test_limits_parse_with_the_limits_notation(text: str, amount: int, period: int) -> None:
    limit = RateLimit.parse(text)
    assert (limit.amount, limit.period) == (amount, period)
    assert str(limit) == text


def test_limits_are_equal_when_they_mean_the_same() -> None:
    assert RateLimit.parse("5/minute") == RateLimit.parse("5 per minute")
    assert hash(RateLimit.parse("5/minute")) == hash(RateLimit.parse("5 per 1 minute"))
    assert RateLimit.parse("5/minute") != RateLimit.parse("5/second")


@pytest.mark.parametrize("text", ["", "fast", "10/fortnight", "ten/second", "0/second", "/second"])
def test_bad_limits_are_a_value_error_quoting_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="bad rate limit"):
        RateLimit.parse(text)


async def test_memory_limiter_allows_the_limit_then_refuses_with_retry_after() -> None:
    limit = RateLimit.parse("3/minute")
    async with MemoryRateLimiter() as limiter:
        decisions = [await limiter.hit("alice", limit) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert all(0 < d.retry_after <= 60 for d in decisions[3:])
    assert all(d.retry_after == 0 for d in decisions[:3])


async def test_keys_and_limits_are_counted_separately() -> None:
    one = RateLimit.parse("1/minute")
    two = RateLimit.parse("2/minute")
    async with MemoryRateLimiter() as limiter:
        assert (await limiter.hit("a", one)).allowed
        assert not (await limiter.hit("a", one)).allowed
        assert (await limiter.hit("b", one)).allowed
        assert (await limiter.hit("a", two)).allowed


async def test_number_of_keys_is_bounded_and_least_recently_used_is_evicted() -> None:
    limit = RateLimit.parse("1/hour")
    async with MemoryRateLimiter(max_keys=3) as limiter:
        for key in ("k1", "k2", "k3"):
            assert (await limiter.hit(key, limit)).allowed
        assert not (await limiter.hit("k1", limit)).allowed  # k1 is now most recently used
        for n in range(100):
            await limiter.hit(f"flood-{n}", limit)
            assert len(limiter) <= 3
        assert len(limiter) == 3
        # k1, k2, k3 were pushed out by the flood: their counts were forgotten.
        assert (await limiter.hit("k2", limit)).allowed
        # The most recent flood keys are still tracked and still refused.
        assert not (await limiter.hit("flood-99", limit)).allowed


async def test_recently_used_key_survives_eviction_of_older_ones() -> None:
    limit = RateLimit.parse("1/hour")
    async with MemoryRateLimiter(max_keys=2) as limiter:
        await limiter.hit("old", limit)
        await limiter.hit("hot", limit)
        await limiter.hit("old", limit)  # touch: "hot" is now least recently used
        await limiter.hit("new", limit)  # evicts "hot"
        assert not (await limiter.hit("old", limit)).allowed
        assert (await limiter.hit("hot", limit)).allowed


def test_max_keys_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        MemoryRateLimiter(max_keys=0)


async def test_check_rate_raises_resource_exhausted_naming_the_limit() -> None:
    limit = RateLimit.parse("1/minute")
    async with MemoryRateLimiter() as limiter:
        first = await check_rate(limiter, "caller-7", limit)
        assert first == Decision(True, 0, 0.0)
        with pytest.raises(ResourceExhausted) as caught:
            await check_rate(limiter, "caller-7", limit)
    error = caught.value
    assert "rate limit 1/minute exceeded" in error.message
    assert "caller-7" not in error.message
    assert error.retry_after is not None and 0 < error.retry_after <= 60
    assert status_of(error) is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_closed_limiter_refuses_hits_and_close_is_idempotent() -> None:
    limiter = MemoryRateLimiter()
    await limiter.hit("k", RateLimit.parse("5/second"))
    await limiter.close()
    await limiter.close()
    assert len(limiter) == 0
    with pytest.raises(Unavailable, match="closed"):
        await limiter.hit("k", RateLimit.parse("5/second"))


async def test_open_ratelimiter_picks_the_backend_from_the_url() -> None:
    memory = open_ratelimiter("memory://", max_keys=7)
    assert isinstance(memory, MemoryRateLimiter) and memory.max_keys == 7
    redis = open_ratelimiter("redis://127.0.0.1:6379/0", failure_mode="closed")
    assert isinstance(redis, RedisRateLimiter) and redis.failure_mode == "closed"
    await memory.close()
    await redis.close()
    with pytest.raises(InvalidArgument, match=r"'memcached://u:\*\*\*@h:1'"):
        open_ratelimiter("memcached://u:secret@h:1")


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url("redis://user:pw@h:6379/0") == "redis://user:***@h:6379/0"
    assert mask_url("redis://:pw@h:6379") == "redis://:***@h:6379"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"
    assert mask_url("memory://") == "memory://"
