"""Where snapshots are kept: a narrow :class:`SnapshotStore` protocol and two implementations.

:class:`MemorySnapshotStore` keeps them in the process (the embedded default and for tests).
:class:`LogSnapshotStore` keeps them in any append-only record log with the manifest store's
``append(stream, record) -> int`` / ``read(stream, after, limit)`` methods, so snapshots live in
SQLite or PostgreSQL next to the manifests without this package importing a backend.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from runtime.errors import NotFound
from runtime.lcc._snapshot import Snapshot

__all__ = ["LogSnapshotStore", "MemorySnapshotStore", "RecordLog", "SnapshotStore"]


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
