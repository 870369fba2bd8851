"""Rate limiting: in process, or shared across gateways through Redis (SPEC §5, §6).

Limits are strings such as ``100/second``, parsed by the ``limits`` library, whose moving-window
strategy does the counting. :func:`open_ratelimiter` picks the backend from ``ratelimit_url``;
:func:`check_rate` turns a refusal into ``RESOURCE_EXHAUSTED`` with ``retry_after``.

    >>> import asyncio
    >>> async def demo() -> list[bool]:
    ...     async with MemoryRateLimiter() as limiter:
    ...         limit = RateLimit.parse("2/minute")
    ...         return [(await limiter.hit("k", limit)).allowed for _ in range(3)]
    >>> asyncio.run(demo())
    [True, True, False]
"""

from runtime.ratelimit._open import open_ratelimiter
from runtime.ratelimit._redis import FailureMode
from runtime.ratelimit._types import Decision, RateLimit, RateLimiter, check_rate

__all__ = [
    "Decision",
    "FailureMode",
    "RateLimit",
    "RateLimiter",
    "check_rate",
    "open_ratelimiter",
]
