"""Reading an append-only log as it grows (the audit trail, stored snapshots): its recent entries.

Workers run in processes of their own, and each one already appends one audit record per call,
with that call's lifecycle events and their durations, to the audit file or to the store's
``audit`` stream. :class:`LogTail` follows such a log from near its end, so a reader in another
process (the playground) sees every worker's lifecycles without any new port or push channel,
and without costing the calls anything. It follows the store's ``snapshots`` stream the same way.

The file is read from its last ``tail_bytes`` on the first poll, then from where the last poll
stopped (a file that shrank was rotated or truncated: reading starts again at its beginning). The
store stream is read from its last ``capacity`` records, found by bisecting on record ids, then
onwards from the last id seen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = ["LogTail", "RecordReader"]

log = logging.getLogger("modrpc.audit")

TAIL_BYTES = 4 * 1024 * 1024
"""How much of the end of an existing audit file the first poll reads."""
READ_BYTES = 8 * 1024 * 1024
"""The most one poll reads from the file; the rest waits for the next poll."""
STORE_PAGE = 500


class RecordReader(Protocol):
    """The one method of the manifest store that reading its audit stream needs."""

    async def read(self, stream: str, after: int = 0, limit: int = 100) -> list[tuple[int, dict[str, Any]]]: ...


def _audit_request_id(record: Mapping[str, Any]) -> str:
    return str(record.get("request_id", ""))


class LogTail:
    """The last ``capacity`` entries of a JSON-lines file (``path``) or a store stream (``store``).

    Each entry is ``(position, record)``: the record's id in the store stream, or the byte
    offset of its line in the file. ``request_id_of`` says which request a record belongs to
    (an audit record's ``request_id`` by default).
    """

    def __init__(
        self,
        *,
        path: Path | None = None,
        store: RecordReader | None = None,
        stream: str = "audit",
        capacity: int = 5000,
        tail_bytes: int = TAIL_BYTES,
        request_id_of: Callable[[Mapping[str, Any]], str] = _audit_request_id,
    ) -> None:
        if (path is None) == (store is None):
            raise ValueError("an audit tail reads either a file or a store stream")
        self._path = path
        self._store = store
        self._stream = stream
        self._tail_bytes = tail_bytes
        self._request_id_of = request_id_of
        self._records: deque[tuple[int, dict[str, Any]]] = deque(maxlen=capacity)
        self._by_request: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self.capacity = capacity
        self._offset: int | None = None
        self._identity: tuple[int, int] | None = None
        self._partial = b""
        self._start = 0
        self._after: int | None = None
        self._lock = asyncio.Lock()

    @property
    def source(self) -> str:
        return str(self._path) if self._path is not None else f"store stream {self._stream!r}"

    async def poll(self) -> int:
        """Read what was appended since the last poll; returns how many records were added."""
        async with self._lock:
            if self._path is not None:
                chunk = await asyncio.to_thread(self._read_file)
                return self._add_lines(chunk)
            return await self._read_store()

    def records_of(self, request_id: str) -> list[dict[str, Any]]:
        """The kept records of one request id, oldest first (a call and the module calls it made)."""
        return list(self._by_request.get(request_id, ()))

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest records, newest first."""
        return [record for _, record in list(self._records)[-limit:][::-1]]

    def entries(self, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
        """The newest ``(position, record)`` entries, newest first."""
        return list(self._records)[-limit:][::-1]

    # -- the file ------------------------------------------------------------------------------
    def _read_file(self) -> bytes:
        assert self._path is not None
        try:
            with open(self._path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                identity = (stat.st_dev, stat.st_ino)
                if self._offset is None or identity != self._identity or stat.st_size < self._offset:
                    first = self._offset is None
                    self._identity = identity
                    self._partial = b""
                    self._offset = max(0, stat.st_size - self._tail_bytes) if first else 0
                    if self._offset:
                        handle.seek(self._offset - 1)
                        if handle.read(1) != b"\n":  # started mid-record: skip to the next line
                            handle.readline()
                        self._offset = handle.tell()
                handle.seek(self._offset)
                data = handle.read(READ_BYTES)
                self._start = self._offset - len(self._partial)  # where the next line starts
                self._offset += len(data)
                return data
        except FileNotFoundError:
            return b""

    def _add_lines(self, chunk: bytes) -> int:
        if not chunk:
            return 0
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the rest
        added = 0
        position = self._start
        for line in lines:
            offset, position = position, position + len(line) + 1
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                log.warning("skipping an audit line that is not JSON in %s", self._path)
                continue
            if isinstance(record, dict):
                self._add(offset, record)
                added += 1
        return added

    # -- the store -----------------------------------------------------------------------------
    async def _read_store(self) -> int:
        assert self._store is not None
        if self._after is None:
            self._after = await self._tail_start()
        added = 0
        while True:
            rows = await self._store.read(self._stream, after=self._after, limit=STORE_PAGE)
            for seq, record in rows:
                self._after = seq
                if isinstance(record, dict):
                    self._add(seq, record)
                    added += 1
            if len(rows) < STORE_PAGE:
                return added

    async def _tail_start(self) -> int:
        """The id after which the stream's last ``capacity`` records start (0: all of them)."""
        assert self._store is not None
        store, stream, keep = self._store, self._stream, self.capacity

        async def more_than_kept_after(after: int) -> bool:
            return len(await store.read(stream, after=after, limit=keep + 1)) > keep

        if not await more_than_kept_after(0):
            return 0
        low, high = 0, 1
        while await more_than_kept_after(high):  # ids grow; find one past which few remain
            low, high = high, high * 2
        while high - low > 1:  # invariant: more than `keep` after low, at most `keep` after high
            middle = (low + high) // 2
            if await more_than_kept_after(middle):
                low = middle
            else:
                high = middle
        return high

    # -- both ----------------------------------------------------------------------------------
    def _add(self, position: int, record: dict[str, Any]) -> None:
        if len(self._records) == self._records.maxlen:
            self._forget(self._records[0][1])
        self._records.append((position, record))
        request_id = self._request_id_of(record)
        if request_id:
            self._by_request.setdefault(request_id, []).append(record)
            self._by_request.move_to_end(request_id)

    def _forget(self, old: dict[str, Any]) -> None:
        request_id = self._request_id_of(old)
        kept = self._by_request.get(request_id)
        if kept is None:
            return
        if kept and kept[0] is old:
            kept.pop(0)
        if not kept:
            del self._by_request[request_id]
