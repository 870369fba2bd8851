"""Snapshots waiting for the store, on local disk: a worker killed while the store is down loses
none of them.

:class:`~runtime.lcc.WriteBehindSnapshots` keeps the snapshots it has not written yet in memory;
with a spool each one is also in a SQLite file of its own process
(``<folder>/<name>.<pid>.<token>.sqlite3``, private) from the moment it is queued until the store has it.
At start a worker takes over the files of processes of the same name that no longer run (one
killed, or stopped before the store came back), so their snapshots are written by whoever runs
next. A snapshot may be written twice (its process died after the store took it, before the
spool forgot it), never lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import uuid
from pathlib import Path

from runtime.files import private_file
from runtime.lcc import Snapshot

__all__ = ["SnapshotSpool"]

log = logging.getLogger("modrpc.lcc.snapshots")  # beside the writer's own lines

_SCHEMA = "CREATE TABLE IF NOT EXISTS waiting (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    return True


class SnapshotSpool:
    """One process's snapshots that wait for the store (a :class:`~runtime.lcc.Spool`).
    Blocking calls: the writer runs them in a thread."""

    def __init__(self, folder: Path, name: str, *, pid: int | None = None) -> None:
        self.folder = folder
        self.name = name
        self.pid = os.getpid() if pid is None else pid
        # One file per spool, even for two of one process (in-process workers, tests).
        self.path = folder / f"{name}.{self.pid}.{uuid.uuid4().hex[:8]}.sqlite3"
        self._db = self._open(self.path)
        self._lock = threading.Lock()

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        private_file(path)  # 0600 in a 0700 folder: snapshots hold callers' requests
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_SCHEMA)
        return db

    def add(self, snapshot: Snapshot) -> int:
        """Keep ``snapshot`` until :meth:`remove`; its place in the spool."""
        body = json.dumps(snapshot.to_json(), separators=(",", ":"))
        with self._lock:
            seq = self._db.execute("INSERT INTO waiting (body) VALUES (?)", (body,)).lastrowid
        assert seq is not None
        return seq

    def remove(self, seq: int) -> None:
        """The store has it (or refused it for good): forget it."""
        with self._lock:
            self._db.execute("DELETE FROM waiting WHERE seq = ?", (seq,))

    def take_over(self) -> list[tuple[int, Snapshot]]:
        """Move into this spool the snapshots of processes of the same name that no longer run,
        and return everything this spool holds (oldest first)."""
        for other in sorted(self.folder.glob(f"{self.name}.*.sqlite3")):
            pid = other.name[len(self.name) + 1 :].split(".", 1)[0]
            if other == self.path or not pid.isdigit() or _running(int(pid)):
                continue  # its own, or a running process's
            self._adopt(other)
        with self._lock:
            rows = self._db.execute("SELECT seq, body FROM waiting ORDER BY seq").fetchall()
        waiting: list[tuple[int, Snapshot]] = []
        for seq, body in rows:
            try:
                waiting.append((seq, Snapshot.from_json(json.loads(body))))
            except Exception as exc:  # a damaged row: say so, never fail the start
                log.error("a spooled snapshot in %s cannot be read (%s); it stays there", self.path, exc)
        return waiting

    def _adopt(self, other: Path) -> None:
        try:
            source = sqlite3.connect(other, timeout=10.0)
            try:
                rows = source.execute("SELECT body FROM waiting ORDER BY seq").fetchall()
            finally:
                source.close()
        except sqlite3.Error as exc:
            log.error("cannot read the snapshots a stopped worker left in %s: %s", other, exc)
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO waiting (body) VALUES (?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{other}{suffix}").unlink()
        if rows:
            log.warning("took over %d snapshots a stopped worker left waiting for the store (%s)", len(rows), other.name)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM waiting").fetchone()[0])

    def close(self) -> None:
        """Close the file; an empty spool is removed."""
        empty = self.count() == 0
        with self._lock:
            self._db.close()
        if empty:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{self.path}{suffix}").unlink()
