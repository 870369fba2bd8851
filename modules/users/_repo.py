"""Where users are kept: a SQLite file, so users survive a worker restart."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from runtime.fabric import OutboxBatch
from runtime.files import private_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    given_name TEXT NOT NULL,
    family_name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
)
"""


class UserRepository:
    """A small SQLite table of users; calls run in a thread so the event loop never blocks."""

    def __init__(self, path: Path) -> None:
        private_file(path)  # 0600 in a 0700 folder: it holds people's data
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()

    def _run(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _insert(self, row: dict[str, Any], events: OutboxBatch | None) -> bool:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO users VALUES (?, ?, ?, ?, ?)",
                    (row["id"], row["given_name"], row["family_name"], row["email"], row["created_at"]),
                )
                if events is not None:
                    events.write(self._db)  # the user and its events: one transaction
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                return False
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    async def insert(self, row: dict[str, Any], events: OutboxBatch | None = None) -> bool:
        """Insert a user, with the events published so far when given (``gctx.outbox()``), in one
        transaction: both are saved or neither. False when the email is taken."""
        return await asyncio.to_thread(self._insert, row, events)

    async def get(self, user_id: str) -> dict[str, Any] | None:
        rows = await asyncio.to_thread(
            self._run,
            "SELECT id, given_name, family_name, email, created_at FROM users WHERE id = ?",
            (user_id,),
        )
        if not rows:
            return None
        keys = ("id", "given_name", "family_name", "email", "created_at")
        return dict(zip(keys, rows[0], strict=True))


_repo: UserRepository | None = None


def repository() -> UserRepository:
    """The process's repository, opened on first use under ``$MODRPC_DATA_DIR`` (``.modrpc``)."""
    global _repo
    if _repo is None:
        _repo = UserRepository(Path(os.environ.get("MODRPC_DATA_DIR", ".modrpc")) / "users.sqlite3")
    return _repo
