"""Where users are kept: a SQLite file, so users survive a worker restart."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

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

    async def insert(self, row: dict[str, Any]) -> bool:
        """Insert a user; False when the email is taken."""
        try:
            await asyncio.to_thread(
                self._run,
                "INSERT INTO users VALUES (?, ?, ?, ?, ?)",
                (row["id"], row["given_name"], row["family_name"], row["email"], row["created_at"]),
            )
        except sqlite3.IntegrityError:
            return False
        return True

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
