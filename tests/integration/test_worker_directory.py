"""WorkerDirectory against a real SQLite store: the channel pool follows the registered workers.

A worker reads the directory once as it starts and then follows the store's change feed. A
worker of a dependency that registers between that first read and the moment the feed is
subscribed must not be lost until some unrelated change happens to come along.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.client import InstancePool as ChannelPool
from runtime.store import WorkerRecord, open_store
from runtime.worker._directory import WorkerDirectory


def record(worker_id: str, module: str, address: str, *, healthy: bool = True) -> WorkerRecord:
    now = time.time()
    return WorkerRecord(
        id=worker_id,
        module=module,
        address=address,
        versions=("2025-06-01",),
        healthy=healthy,
        pid=1,
        started_at=now,
        last_seen=now,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[object]:
    async with open_store(f"sqlite:///{tmp_path}/store.db") as s:
        yield s


async def addresses_become(pool: ChannelPool, module: str, expected: tuple[str, ...]) -> None:
    give_up = time.monotonic() + 5
    while pool.addresses(module) != expected:
        assert time.monotonic() < give_up, f"{module}: {pool.addresses(module)} != {expected}"
        await asyncio.sleep(0.02)


async def test_a_worker_registered_before_the_feed_is_followed_is_not_missed(store: object) -> None:
    async with ChannelPool() as pool:
        directory = WorkerDirectory(store, pool, ["users"])
        await directory.refresh()  # what Worker.start does first
        assert pool.addresses("users") == ()
        await store.register_worker(record("users-1", "users", "127.0.0.1:7001"))  # type: ignore[attr-defined]
        follow = asyncio.create_task(directory.run())
        try:
            await addresses_become(pool, "users", ("127.0.0.1:7001",))
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow


async def test_the_pool_follows_registrations_health_and_departures(store: object) -> None:
    async with ChannelPool() as pool:
        directory = WorkerDirectory(store, pool, ["users", "inventory"])
        await directory.refresh()
        follow = asyncio.create_task(directory.run())
        try:
            await asyncio.sleep(0.1)  # let the feed subscribe
            await store.register_worker(record("u1", "users", "127.0.0.1:7001"))  # type: ignore[attr-defined]
            await store.register_worker(record("u2", "users", "127.0.0.1:7002"))  # type: ignore[attr-defined]
            await store.register_worker(record("o1", "orders", "127.0.0.1:7009"))  # type: ignore[attr-defined]
            await addresses_become(pool, "users", ("127.0.0.1:7001", "127.0.0.1:7002"))
            assert pool.addresses("orders") == ()  # not a dependency: not followed

            await store.set_worker_health("u1", False)  # type: ignore[attr-defined]
            await addresses_become(pool, "users", ("127.0.0.1:7002",))
            await store.deregister_worker("u2")  # type: ignore[attr-defined]
            await addresses_become(pool, "users", ())
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
