"""Snapshots written behind the call: a store that is down or hangs never fails or delays a call,
and what happens to each snapshot is said in the log, with its request id."""

from __future__ import annotations

import asyncio
import logging

import pytest

from runtime.errors import InvalidArgument, Unavailable
from runtime.identity import Principal
from runtime.lcc import (
    LocalContext,
    MemorySnapshotStore,
    RequestMeta,
    Snapshot,
    WriteBehindSnapshots,
)


def snapshot(request_id: str) -> Snapshot:
    meta = RequestMeta(
        request_id=request_id, handler="orders.PlaceOrder", method="/orders.v1.OrdersService/PlaceOrder",
        version="2025-01-15", flags=frozenset(), deadline=None, principal=Principal("ada", (), "jwt"),
    )  # fmt: skip
    return LocalContext(meta).snapshot()


class Flaky(MemorySnapshotStore):
    """A snapshot store that is down (Unavailable), hangs, or refuses some snapshots for good."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.hang = asyncio.Event()
        self.hang.set()
        self.refuse: set[str] = set()

    async def save(self, snapshot: Snapshot) -> str:
        await self.hang.wait()
        if self.down:
            raise Unavailable("manifest store postgresql://db is unavailable: no answer within 5s")
        if snapshot.request_id in self.refuse:
            raise InvalidArgument("record is not a JSON document")
        return await super().save(snapshot)


async def until(condition: object, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - polls state with no event
            await asyncio.sleep(0.01)


async def test_a_hung_store_does_not_delay_the_call_and_gets_the_snapshot_when_it_answers() -> None:
    store = Flaky()
    store.hang.clear()
    writer = WriteBehindSnapshots(store)
    async with asyncio.timeout(0.5):  # the call's side never waits on the store
        assert await writer.save(snapshot("r-1")) == "r-1"
    assert await store.list() == []
    store.hang.set()
    await until(lambda: writer.written == 1)
    assert len(await writer.list()) == 1
    await writer.close()


async def test_a_down_store_is_reported_with_what_waits_and_written_once_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "modrpc.lcc.snapshots")
    store = Flaky()
    store.down = True
    writer = WriteBehindSnapshots(store, retry_max=0.05)
    for n in range(3):
        await writer.save(snapshot(f"r-{n}"))
    await until(lambda: any("cannot be stored" in r.getMessage() for r in caplog.records))
    store.down = False
    await until(lambda: writer.written == 3)
    await writer.close()
    said = [r.getMessage() for r in caplog.records]
    down = next(s for s in said if "cannot be stored" in s)
    assert "postgresql://db is unavailable" in down and "wait in memory (requests r-0" in down, down
    assert any("takes snapshots again" in s for s in said), said


async def test_snapshots_that_do_not_fit_or_are_refused_or_never_written_are_named_in_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Flaky()
    store.refuse.add("r-bad")
    writer = WriteBehindSnapshots(store, max_pending=2, retry_max=0.05)
    await writer.save(snapshot("r-bad"))
    await until(lambda: writer.dropped == 1)
    store.down = True
    await writer.save(snapshot("r-1"))
    await writer.save(snapshot("r-2"))
    await writer.save(snapshot("r-3"))  # the third while two wait: it does not fit
    await writer.close(grace=0.2)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("r-bad not stored: the store refused it" in s for s in said), said
    assert any("snapshot of request r-3 dropped: 2 snapshots already wait" in s for s in said), said
    assert any("2 snapshots were never stored" in s and "r-1, r-2" in s for s in said), said
    assert writer.dropped == 4
