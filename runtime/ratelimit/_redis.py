"""The shared rate limiter: ``limits``' moving window kept in Redis, so gateways share one count.

Redis errors are translated here and nowhere else. When Redis cannot be reached the limiter
fails open (allows) or closed as configured, logs a warning at most once per ``warn_interval``
seconds, and leaves Redis alone for ``cooldown`` seconds so a dead server costs one failed
connection per cooldown instead of one per call. Failing closed raises
:class:`~runtime.errors.Unavailable` naming the store: the caller is not over any limit, the
limiter cannot tell, and RESOURCE_EXHAUSTED would send it to back off for nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from runtime.config import mask_url
from runtime.errors import Unavailable
from runtime.ratelimit._types import Decision, RateLimit, decide

__all__ = ["FailureMode", "RedisRateLimiter"]

FailureMode = Literal["open", "closed"]

log = logging.getLogger("modrpc.ratelimit")

_STORE_ERRORS = (StorageError, RedisError, OSError)


class _WarningThrottle:
    """Allows one log line per ``interval`` seconds and counts the ones it held back."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self._interval = interval
        self._clock = clock
        self._next_at: float | None = None
        self.suppressed = 0

    def ready(self) -> bool:
        now = self._clock()
        if self._next_at is not None and now < self._next_at:
            self.suppressed += 1
            return False
        self._next_at = now + self._interval
        return True


class RedisRateLimiter:
    """Limits shared through Redis by every gateway pointing at the same server.

    ``url`` is ``redis://[user:password@]host:port/db`` or ``rediss://…``. Keys live under
    ``key_prefix`` and expire with their window, so Redis holds only keys hit in the last period.

        >>> limiter = RedisRateLimiter("redis://127.0.0.1:6379/0", failure_mode="closed")
    """

    def __init__(
        self,
        url: str,
        *,
        failure_mode: FailureMode = "open",
        key_prefix: str = "modrpc:ratelimit",
        timeout: float = 0.5,
        cooldown: float = 1.0,
        warn_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_mode not in ("open", "closed"):
            raise ValueError(f"failure_mode must be 'open' or 'closed', got {failure_mode!r}")
        self._url = mask_url(url)
        self._failure_mode = failure_mode
        self._cooldown = cooldown
        self._clock = clock
        # One attempt per call, short timeouts: a rate-limit check is not worth waiting for.
        self._pool = ConnectionPool.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        storage = RedisStorage(
            "async+" + url,
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=key_prefix,
            connection_pool=self._pool,  # type: ignore[arg-type]
        )
        self._strategy = MovingWindowRateLimiter(storage)
        self._warnings = _WarningThrottle(warn_interval, clock)
        self._down_until: float | None = None
        self._failing = False
        self._closed = False

    @property
    def failure_mode(self) -> FailureMode:
        return self._failure_mode

    async def hit(self, key: str, limit: RateLimit) -> Decision:
        if self._closed:
            raise Unavailable("the rate limiter is closed")
        if self._down_until is not None and self._clock() < self._down_until:
            return self._degraded(limit)
        try:
            decision = await decide(self._strategy, key, limit)
        except _STORE_ERRORS as exc:
            self._on_failure(exc)
            return self._degraded(limit)
        if self._failing:
            self._failing = False
            log.info("rate-limit store %s is reachable again", self._url)
        self._down_until = None
        return decision

    def _degraded(self, limit: RateLimit) -> Decision:
        if self._failure_mode == "open":
            return Decision(True, limit.amount, 0.0)
        # The caller is told which backend, not where it lives: the address goes to the log.
        raise Unavailable(
            "rate limiting is unavailable: its Redis store (ratelimit_url) cannot be reached and "
            f"limits fail closed (ratelimit_failure_mode); retry in {max(self._cooldown, 0.001):g}s"
        )

    def _on_failure(self, exc: BaseException) -> None:
        self._failing = True
        self._down_until = self._clock() + self._cooldown
        if self._warnings.ready():
            held_back = self._warnings.suppressed
            self._warnings.suppressed = 0
            log.warning(
                "rate-limit store %s cannot be reached (%s); failing %s%s",
                self._url,
                _reason(exc),
                self._failure_mode,
                f" ({held_back} similar warnings suppressed)" if held_back else "",
            )

    async def close(self) -> None:
        """Close the connection pool. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self._pool.aclose()

    async def __aenter__(self) -> RedisRateLimiter:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


def _reason(exc: BaseException) -> str:
    cause = exc.storage_error if isinstance(exc, StorageError) else exc
    return f"{type(cause).__name__}: {cause}"
