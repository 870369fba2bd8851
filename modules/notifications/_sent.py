"""Sent notifications in SQLite, one per user, shared by every worker of the module."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path

from modules.notifications.models import Notification


class SentLog:
    """The welcome sent to each user; a second one for the same user is not recorded."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sent (user_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, body TEXT NOT NULL)"
        )
        self._lock = threading.Lock()

    def _add(self, notification: Notification) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO sent SELECT ?, COALESCE(MAX(seq), 0) + 1, ? FROM sent",
                (notification.user_id, notification.model_dump_json()),
            )
            return cursor.rowcount == 1

    def _list(self, user_id: str) -> list[Notification]:
        with self._lock:
            if user_id:
                rows = self._db.execute("SELECT body FROM sent WHERE user_id = ?", (user_id,)).fetchall()
            else:
                rows = self._db.execute("SELECT body FROM sent ORDER BY seq").fetchall()
        return [Notification.model_validate_json(row[0]) for row in rows]

    async def add(self, notification: Notification) -> bool:
        """Record ``notification``; False when its user was already welcomed."""
        return await asyncio.to_thread(self._add, notification)

    async def list(self, user_id: str = "") -> list[Notification]:
        return await asyncio.to_thread(self._list, user_id)


_log: SentLog | None = None


def sent_log() -> SentLog:
    """The process's log of sent notifications, opened on first use under ``$MODRPC_DATA_DIR``."""
    global _log
    if _log is None:
        _log = SentLog(Path(os.environ.get("MODRPC_DATA_DIR", ".modrpc")) / "notifications.sqlite3")
    return _log
