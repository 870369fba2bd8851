"""Snapshots written behind the call: a store that is down or hangs never fails or delays a call,
and what happens to each snapshot is said in the log, with its request id."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

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
from runtime.worker._spool import SnapshotSpool


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


async def test_snapshots_waiting_for_a_down_store_outlive_their_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker stops (or is killed) while the store is down: its snapshots stay in its spool on
    disk, and the next worker of the module takes them over and writes them."""
    caplog.set_level(logging.WARNING, "modrpc.lcc.snapshots")
    down = Flaky()
    down.down = True
    gone = _dead_pid()
    first = WriteBehindSnapshots(down, retry_max=0.05, spool=SnapshotSpool(tmp_path, "orders", pid=gone))
    for n in range(3):
        assert await first.save(snapshot(f"r-{n}")) == f"r-{n}"
    await first.close(grace=0.1)
    assert first.dropped == 0, "kept on disk, not dropped"
    assert any("the next worker of the module writes them" in r.getMessage() for r in caplog.records)
    (spooled,) = _spools(tmp_path)
    assert spooled.name.startswith(f"orders.{gone}.")
    assert spooled.stat().st_mode & 0o077 == 0, "private: it holds requests"

    store = Flaky()
    second = WriteBehindSnapshots(store, spool=SnapshotSpool(tmp_path, "orders"))
    await second.save(snapshot("r-new"))
    await until(lambda: second.written == 4)
    stored = {(await store.load(i)).request_id for i in await store.list()}
    assert stored == {"r-0", "r-1", "r-2", "r-new"}
    assert not spooled.exists(), "the stopped worker's spool was taken over"
    await second.close()
    assert _spools(tmp_path) == [], "an empty spool is removed"


async def test_a_running_workers_spool_is_left_alone(tmp_path: Path) -> None:
    """Another worker of the module that is still running keeps its own snapshots."""
    busy = Flaky()
    busy.down = True
    other = WriteBehindSnapshots(busy, retry_max=0.05, spool=SnapshotSpool(tmp_path, "orders", pid=os.getppid()))
    await other.save(snapshot("r-theirs"))
    store = Flaky()
    mine = WriteBehindSnapshots(store, spool=SnapshotSpool(tmp_path, "orders"))
    await mine.save(snapshot("r-mine"))
    await until(lambda: mine.written == 1)
    await asyncio.sleep(0.1)
    assert [(await store.load(i)).request_id for i in await store.list()] == ["r-mine"]
    await mine.close()
    await other.close(grace=0.1)
    assert [p.name.split(".")[1] for p in _spools(tmp_path)] == [str(os.getppid())]


def _spools(folder: Path) -> list[Path]:
    return list(folder.glob("orders.*.sqlite3"))


def _dead_pid() -> int:
    """A process id no process has now."""
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1
