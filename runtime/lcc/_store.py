"""Where snapshots are kept: a narrow :class:`SnapshotStore` protocol and two implementations.

:class:`MemorySnapshotStore` keeps them in the process (the embedded default and for tests).
:class:`LogSnapshotStore` keeps them in any append-only record log with the manifest store's
``append(stream, record) -> int`` / ``read(stream, after, limit)`` methods, so snapshots live in
SQLite or PostgreSQL next to the manifests without this package importing a backend.
:class:`WriteBehindSnapshots` puts either behind a queue, so no call waits on the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from runtime.errors import ModrpcError, NotFound, Unavailable
from runtime.lcc._snapshot import Snapshot

__all__ = ["LogSnapshotStore", "MemorySnapshotStore", "RecordLog", "SnapshotStore", "WriteBehindSnapshots"]

_log = logging.getLogger("modrpc.lcc.snapshots")


class SnapshotStore(Protocol):
    """Stores snapshots and gives them back by id."""

    async def save(self, snapshot: Snapshot) -> str:
        """Store ``snapshot``; returns its id."""
        ...

    async def load(self, snapshot_id: str) -> Snapshot:
        """The snapshot stored under ``snapshot_id``; :class:`runtime.errors.NotFound` if none."""
        ...

    async def list(self, handler: str | None = None) -> list[str]:
        """Ids of the stored snapshots, oldest first, optionally only those of one handler."""
        ...

    async def prune(self, *, before: float, max_bytes: int) -> int:
        """Remove the snapshots stored before ``before`` (unix seconds), then the oldest until
        the rest take at most ``max_bytes``; how many went (retention)."""
        ...


class MemorySnapshotStore:
    """Snapshots held in this process as JSON text.

    Keeping the text rather than the object proves each snapshot survives serialisation and
    means later changes to a loaded snapshot cannot alter the stored one.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._records: dict[str, tuple[str, str, float]] = {}  # id -> (handler, JSON, stored at)
        self._clock = clock
        self._next = 1

    async def save(self, snapshot: Snapshot) -> str:
        text = json.dumps(snapshot.to_json(), allow_nan=False)
        snapshot_id = str(self._next)
        self._next += 1
        self._records[snapshot_id] = (snapshot.handler, text, self._clock())
        return snapshot_id

    async def load(self, snapshot_id: str) -> Snapshot:
        record = self._records.get(snapshot_id)
        if record is None:
            raise NotFound(f"no snapshot with id {snapshot_id!r}")
        return Snapshot.from_json(json.loads(record[1]))

    async def list(self, handler: str | None = None) -> list[str]:
        return [sid for sid, (owner, _, _) in self._records.items() if handler in (None, owner)]

    async def prune(self, *, before: float, max_bytes: int) -> int:
        kept = 0
        doomed = []
        for sid, (_, text, stored_at) in reversed(self._records.items()):  # newest first
            kept += len(text.encode())
            if stored_at < before or kept > max_bytes:
                doomed.append(sid)
        for sid in doomed:
            del self._records[sid]
        return len(doomed)


class RecordLog(Protocol):
    """An append-only log of JSON records in named streams, numbered in append order."""

    async def append(self, stream: str, record: dict[str, Any]) -> int:
        """Append ``record`` to ``stream``; returns its sequence number (> 0, increasing)."""
        ...

    async def read(
        self, stream: str, after: int = 0, limit: int = 100
    ) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` records of ``stream`` with a sequence number above ``after``, in order."""
        ...

    async def prune(
        self, stream: str, *, before: float | None = None, max_bytes: int | None = None
    ) -> int:
        """Remove old records of ``stream`` by age and total size; how many went."""
        ...


class LogSnapshotStore:
    """Snapshots as records of one stream of a :class:`RecordLog`; the id is the sequence number.

    Sequence numbers may have gaps (several streams can share one counter), so a load asks for
    the first record after ``id - 1`` and checks it is the one asked for.
    """

    def __init__(self, log: RecordLog, *, stream: str = "snapshots", page: int = 100) -> None:
        self._log = log
        self._stream = stream
        self._page = page

    async def save(self, snapshot: Snapshot) -> str:
        return str(await self._log.append(self._stream, snapshot.to_json()))

    async def prune(self, *, before: float, max_bytes: int) -> int:
        return await self._log.prune(self._stream, before=before, max_bytes=max_bytes)

    async def load(self, snapshot_id: str) -> Snapshot:
        try:
            seq = int(snapshot_id)
        except ValueError:
            raise NotFound(f"no snapshot with id {snapshot_id!r}") from None
        rows = await self._log.read(self._stream, after=seq - 1, limit=1)
        if not rows or rows[0][0] != seq:
            raise NotFound(f"no snapshot with id {snapshot_id!r} in stream {self._stream!r}")
        return Snapshot.from_json(rows[0][1])

    async def list(self, handler: str | None = None) -> list[str]:
        ids: list[str] = []
        after = 0
        while True:
            rows = await self._log.read(self._stream, after=after, limit=self._page)
            for seq, record in rows:
                if handler is None or record.get("meta", {}).get("handler") == handler:
                    ids.append(str(seq))
            if len(rows) < self._page:
                return ids
            after = rows[-1][0]


class Spool(Protocol):
    """Local disk for the snapshots :class:`WriteBehindSnapshots` has not written yet, so they
    outlive their process (the worker's is ``runtime.worker``'s ``SnapshotSpool``). Blocking
    calls; the writer runs them in a thread."""

    path: Path
    """Where the snapshots wait (for the log)."""

    def add(self, snapshot: Snapshot) -> int:
        """Keep ``snapshot``; its place in the spool."""
        ...

    def remove(self, seq: int) -> None:
        """Forget the snapshot at ``seq``: the store has it, or refused it for good."""
        ...

    def take_over(self) -> list[tuple[int, Snapshot]]:
        """Everything the spool holds, with what stopped processes left: oldest first."""
        ...

    def close(self) -> None: ...


class WriteBehindSnapshots:
    """Snapshots written to ``inner`` in the background, so a call never waits on the store.

    A snapshot is taken when its call ends; writing it to a store that is down or hangs must
    neither fail nor delay the call (PlaceOrder keeps its snapshot policy through a store
    outage). ``save`` queues the snapshot and waits at most ``inline_wait`` seconds for it to be
    written (so with a store that answers, the snapshot is there when the call's answer is),
    then returns: the store's id, or the request id while it is still queued. While the store
    is failing it does not wait at all. The writer keeps at most ``max_pending`` snapshots; while
    the store is unavailable it retries with backoff, and says so in the log: how many wait,
    since when, and why, and when they are written. Nothing is dropped silently: a snapshot that
    does not fit, that the store refuses for good, or that is still queued when :meth:`close`
    gives up, is logged as an error with its request id.
    """

    def __init__(
        self,
        inner: SnapshotStore,
        *,
        max_pending: int = 10_000,
        retry_max: float = 5.0,
        on_drop: Callable[[int], object] | None = None,
        inline_wait: float = 0.2,
        spool: Spool | None = None,
    ) -> None:
        self._inner = inner
        self._spool = spool
        """Where queued snapshots are also kept on disk until written (None: memory only)."""
        self._inline_wait = inline_wait
        self._on_drop = on_drop
        """Told how many snapshots were given up on (a metric's ``add``)."""
        self._max_pending = max_pending
        self._retry_max = retry_max
        self._queue: deque[tuple[Snapshot, asyncio.Future[str | None], int | None]] = deque()
        """Snapshots to write, each with what its caller waits on and its place in the spool."""
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failing_since: float | None = None
        self._reported = 0.0
        self.written = 0
        self.dropped = 0

    def start(self) -> None:
        """Start the writer (with the event loop running)."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="modrpc-snapshot-writer")

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def save(self, snapshot: Snapshot) -> str:
        self.start()
        if len(self._queue) >= self._max_pending:
            self._dropped(1)
            _log.error(
                "snapshot of request %s dropped: %d snapshots already wait for the store (%d dropped so far)",
                snapshot.request_id, len(self._queue), self.dropped,
            )  # fmt: skip
            return snapshot.request_id
        written: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._queue.append((snapshot, written, await self._keep(snapshot)))
        assert self._wake is not None
        self._wake.set()
        if self._failing_since is None and self._inline_wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._inline_wait):
                    await asyncio.shield(written)
        stored = written.result() if written.done() else None
        return stored or snapshot.request_id

    async def load(self, snapshot_id: str) -> Snapshot:
        return await self._inner.load(snapshot_id)

    async def list(self, handler: str | None = None) -> list[str]:
        return await self._inner.list(handler)

    async def prune(self, *, before: float, max_bytes: int) -> int:
        return await self._inner.prune(before=before, max_bytes=max_bytes)

    async def _keep(self, snapshot: Snapshot) -> int | None:
        """Put ``snapshot`` in the spool too; its place there (None: no spool, or it failed)."""
        if self._spool is None:
            return None
        try:
            return await asyncio.to_thread(self._spool.add, snapshot)
        except Exception as exc:  # the spool's disk or database: the call goes on
            _log.error("snapshot of request %s waits in memory only: the spool %s failed: %s",
                       snapshot.request_id, self._spool.path, exc)  # fmt: skip
            return None

    async def _forget(self, seq: int | None) -> None:
        if self._spool is not None and seq is not None:
            try:
                await asyncio.to_thread(self._spool.remove, seq)
            except Exception as exc:  # the spool's disk or database: the call goes on  # it is written again at the next start: no loss
                _log.warning("the snapshot spool %s could not forget a written snapshot: %s", self._spool.path, exc)

    async def _take_over(self) -> None:
        """Queue, ahead of the rest, the snapshots the spool holds from processes that stopped."""
        if self._spool is None:
            return
        try:
            waiting = await asyncio.to_thread(self._spool.take_over)
        except Exception as exc:  # the spool's disk or database: the call goes on
            _log.error("the snapshot spool %s cannot be read: %s", self._spool.path, exc)
            return
        queued = {seq for _, _, seq in self._queue}
        loop = asyncio.get_running_loop()
        earlier = [(snap, loop.create_future(), seq) for seq, snap in waiting if seq not in queued]
        self._queue.extendleft(reversed(earlier))

    def _dropped(self, count: int) -> None:
        self.dropped += count
        if self._on_drop is not None:
            self._on_drop(count)

    async def _run(self) -> None:
        assert self._wake is not None
        await self._take_over()
        backoff = 0.1
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
            snapshot, written, seq = self._queue[0]
            try:
                stored = await self._inner.save(snapshot)
            except Exception as exc:
                if isinstance(exc, ModrpcError) and not isinstance(exc, Unavailable):
                    self._queue.popleft()  # the store refuses this one for good: say so, go on
                    await self._forget(seq)
                    _settle(written, None)
                    self._dropped(1)
                    _log.error("snapshot of request %s not stored: the store refused it: %s", snapshot.request_id, exc)
                    continue
                self._unavailable(exc)  # the store is down, hangs, or its client failed: later
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._retry_max)
                continue
            self._queue.popleft()
            await self._forget(seq)
            _settle(written, stored)
            self.written += 1
            backoff = 0.1
            if self._failing_since is not None and not self._queue:
                _log.warning(
                    "the store takes snapshots again after %.1fs; every snapshot that waited is written",
                    time.monotonic() - self._failing_since,
                )  # fmt: skip
                self._failing_since = None

    def _unavailable(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._reported >= 30.0:
            self._reported = now
            waiting = [s.request_id for s, _, _ in list(self._queue)[:3]]
            _log.error(
                "snapshots cannot be stored (%s): %d wait %s (requests %s%s), written when "
                "the store answers; beyond %d they are dropped",
                exc, len(self._queue), "in memory" if self._spool is None else f"in {self._spool.path}",
                ", ".join(waiting), ", ..." if len(self._queue) > 3 else "", self._max_pending,
            )  # fmt: skip

    async def close(self, grace: float = 5.0) -> None:
        """Write what waits for up to ``grace`` seconds; log the request ids of what could not be."""
        task, self._task = self._task, None
        self._closing = True
        if task is None:
            if self._spool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self._spool.close)
            return
        assert self._wake is not None
        self._wake.set()
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue:
            ids = [s.request_id for s, _, _ in self._queue]
            for _, written, _ in self._queue:
                _settle(written, None)
            listed = ", ".join(ids[:20]) + (", ..." if len(ids) > 20 else "")
            kept = self._spool is not None and all(seq is not None for _, _, seq in self._queue)
            if kept:
                assert self._spool is not None
                _log.warning(
                    "%d snapshots wait for the store in %s: the next worker of the module writes "
                    "them (requests %s)", len(ids), self._spool.path, listed,
                )  # fmt: skip
            else:
                _log.error(
                    "%d snapshots were never stored (the store did not answer before the worker "
                    "stopped): requests %s", len(ids), listed,
                )  # fmt: skip
                self._dropped(len(ids))
            self._queue.clear()
        if self._spool is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._spool.close)


def _settle(future: asyncio.Future[str | None], stored: str | None) -> None:
    if not future.done():
        future.set_result(stored)
