"""When Redis cannot be reached: fail open or closed as configured, warn without spamming, and
leave a dead server alone for the cooldown.

These use real sockets on 127.0.0.1: a port nothing listens on, and a listener that accepts a
connection and hangs up at once (so every Redis command fails), counting the connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from runtime.errors import Unavailable
from runtime.ratelimit import RateLimit, RedisRateLimiter, check_rate

LIMIT = RateLimit.parse("10/second")
CLOSED_PORT_URL = "redis://:hunter2@127.0.0.1:1/0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class HangUpServer:
    """A TCP listener that counts connections and closes each one immediately."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def hang_up_server() -> AsyncIterator[tuple[HangUpServer, str]]:
    server = HangUpServer()
    url = await server.start()
    yield server, url
    await server.close()


async def test_fail_open_allows_calls_while_redis_is_unreachable() -> None:
    async with RedisRateLimiter(CLOSED_PORT_URL, failure_mode="open") as limiter:
        decisions = [await limiter.hit("k", LIMIT) for _ in range(20)]
    assert all(d.allowed for d in decisions)


async def test_fail_closed_refuses_as_unavailable_naming_the_store() -> None:
    async with RedisRateLimiter(CLOSED_PORT_URL, failure_mode="closed", cooldown=2.0) as limiter:
        decision = await limiter.hit("k", LIMIT)
        assert not decision.allowed
        assert decision.retry_after == 2.0
        with pytest.raises(Unavailable) as caught:
            await check_rate(limiter, "k", LIMIT)
    # Not RESOURCE_EXHAUSTED: the caller did not exceed the limit, the store is down.
    assert "rate-limit store redis://:***@127.0.0.1:1/0 is unavailable" in caught.value.message
    assert "hunter2" not in caught.value.message


async def test_warning_is_logged_once_per_interval_with_the_password_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    async with RedisRateLimiter(
        CLOSED_PORT_URL, cooldown=1.0, warn_interval=30.0, clock=clock
    ) as limiter:
        with caplog.at_level(logging.WARNING, logger="runtime.ratelimit"):
            for _ in range(10):
                clock.now += 1.5  # past the cooldown: every hit really tries Redis
                await limiter.hit("k", LIMIT)
            assert len(caplog.records) == 1
            clock.now += 30.0
            await limiter.hit("k", LIMIT)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "redis://:***@127.0.0.1:1/0 cannot be reached" in warnings[0]
    assert "failing open" in warnings[0]
    assert "(9 similar warnings suppressed)" in warnings[1]
    assert all("hunter2" not in w for w in warnings)


async def test_dead_redis_is_left_alone_during_the_cooldown(
    hang_up_server: tuple[HangUpServer, str],
) -> None:
    server, url = hang_up_server
    clock = FakeClock()
    async with RedisRateLimiter(url, failure_mode="closed", cooldown=5.0, clock=clock) as limiter:
        assert not (await limiter.hit("k", LIMIT)).allowed
        tried = server.connections
        assert tried >= 1
        for _ in range(20):
            clock.now += 0.2
            assert not (await limiter.hit("k", LIMIT)).allowed
        assert server.connections == tried  # 4 s of calls, no new connection attempt
        clock.now += 2.0  # past the cooldown
        assert not (await limiter.hit("k", LIMIT)).allowed
        assert server.connections > tried
