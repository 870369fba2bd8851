"""When Redis cannot be reached: fail open or closed as configured, warn without spamming, and
leave a dead server alone for the cooldown.

These use real sockets on 127.0.0.1: a port nothing listens on, and a listener that accepts a
connection and hangs up at once (so every Redis command fails), counting the connections.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.errors import ResourceExhausted, Unavailable
from runtime.ratelimit import RateLimit, check_rate
from runtime.ratelimit._redis import RedisRateLimiter
from tests.fixtures.listening import wait_listening

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


async def test_fail_closed_answers_unavailable_naming_the_store_not_resource_exhausted() -> None:
    async with RedisRateLimiter(CLOSED_PORT_URL, failure_mode="closed", cooldown=2.0) as limiter:
        with pytest.raises(Unavailable) as caught:
            await check_rate(limiter, "k", LIMIT)
    message = caught.value.message
    assert "its Redis store (ratelimit_url) cannot be reached" in message
    assert "retry in 2s" in message and "hunter2" not in message and "127.0.0.1" not in message
    assert not isinstance(caught.value, ResourceExhausted)


async def test_an_outage_of_a_real_redis_is_unavailable_then_limits_apply_again(tmp_path: Path) -> None:
    """A private redis-server (never the shared one) stopped and started under the limiter."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    limit = RateLimit.parse("3/minute")
    clock = FakeClock()
    redis = await _redis_server(port, tmp_path)
    try:
        async with RedisRateLimiter(url, failure_mode="closed", cooldown=1.0, clock=clock) as limiter:
            assert (await check_rate(limiter, "k", limit)).allowed
            redis.kill()
            await redis.wait()
            with pytest.raises(Unavailable, match=r"its Redis store \(ratelimit_url\) cannot be reached"):
                await check_rate(limiter, "k", limit)
            redis = await _redis_server(port, tmp_path)
            clock.now += 1.5  # past the cooldown: Redis is tried again
            assert (await check_rate(limiter, "k", limit)).allowed
            await check_rate(limiter, "k", limit)
            await check_rate(limiter, "k", limit)  # the restarted server counts afresh
            with pytest.raises(ResourceExhausted):
                await check_rate(limiter, "k", limit)
    finally:
        if redis.returncode is None:
            redis.kill()
            await redis.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _redis_server(port: int, folder: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(folder), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_listening(port, within=5.0)
    except TimeoutError:
        process.kill()
        raise RuntimeError(f"redis-server did not start on port {port}") from None
    return process


async def test_warning_is_logged_once_per_interval_with_the_password_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    async with RedisRateLimiter(
        CLOSED_PORT_URL, cooldown=1.0, warn_interval=30.0, clock=clock
    ) as limiter:
        with caplog.at_level(logging.WARNING, logger="modrpc.ratelimit"):
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
        with pytest.raises(Unavailable):
            await limiter.hit("k", LIMIT)
        tried = server.connections
        assert tried >= 1
        for _ in range(20):
            clock.now += 0.2
            with pytest.raises(Unavailable):
                await limiter.hit("k", LIMIT)
        assert server.connections == tried  # 4 s of calls, no new connection attempt
        clock.now += 2.0  # past the cooldown
        with pytest.raises(Unavailable):
            await limiter.hit("k", LIMIT)
        assert server.connections > tried
