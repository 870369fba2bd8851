"""Choosing the rate-limit backend from ``ratelimit_url``."""

from __future__ import annotations

from urllib.parse import urlsplit

from runtime.config import mask_url
from runtime.errors import InvalidArgument
from runtime.ratelimit._memory import MemoryRateLimiter
from runtime.ratelimit._redis import FailureMode, RedisRateLimiter
from runtime.ratelimit._types import RateLimiter

__all__ = ["open_ratelimiter"]


def open_ratelimiter(
    url: str, *, failure_mode: FailureMode = "open", max_keys: int = 100_000
) -> RateLimiter:
    """The limiter ``url`` names: ``memory://`` (per process) or ``redis://…`` (shared).

    ``max_keys`` bounds the memory backend; ``failure_mode`` says what the Redis backend does
    when Redis cannot be reached. Nothing connects until the first hit. An unknown scheme raises
    :class:`~runtime.errors.InvalidArgument` naming the URL (password masked).

        >>> limiter = open_ratelimiter("memory://", max_keys=10)
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryRateLimiter(max_keys=max_keys)
    if scheme in ("redis", "rediss"):
        return RedisRateLimiter(url, failure_mode=failure_mode)
    raise InvalidArgument(
        f"unsupported rate-limit URL {mask_url(url)!r}: expected memory:// or redis://host:port/db"
    )
