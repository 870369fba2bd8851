"""Property 34: rate limits are enforced (in-process backend; the Redis run is in
tests/integration/test_ratelimit_redis_contract.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.ratelimit import RateLimit
from runtime.ratelimit._memory import MemoryRateLimiter

# Periods of a minute or more: every hit of one example lands inside one window.
limits = st.builds(
    lambda amount, period: RateLimit.parse(f"{amount}/{period}"),
    st.integers(1, 20),
    st.sampled_from(["minute", "hour", "day"]),
)


@settings(max_examples=100, deadline=None)
@given(limit=limits, hits=st.lists(st.sampled_from("abcd"), min_size=1, max_size=60))
def test_allowed_hits_never_exceed_the_limit_and_refusals_say_when_to_retry(
    limit: RateLimit, hits: list[str]
) -> None:
    """Property 34: Rate limits are enforced.

    For a random limit and a random sequence of hits over a few keys, all inside one window:
    each key gets exactly ``min(hits, limit)`` calls through, in order; ``remaining`` counts down
    to zero; and every refused call carries ``0 < retry_after <= period``.
    """

    async def run() -> None:
        allowed: Counter[str] = Counter()
        seen: Counter[str] = Counter()
        async with MemoryRateLimiter(max_keys=1000) as limiter:
            for key in hits:
                seen[key] += 1
                decision = await limiter.hit(key, limit)
                assert decision.allowed == (seen[key] <= limit.amount)
                if decision.allowed:
                    allowed[key] += 1
                    assert decision.remaining == limit.amount - allowed[key]
                    assert decision.retry_after == 0
                else:
                    assert decision.remaining == 0
                    assert 0 < decision.retry_after <= limit.period
        for key, count in seen.items():
            assert allowed[key] == min(count, limit.amount) <= limit.amount

    asyncio.run(run())
