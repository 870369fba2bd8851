"""Sent notifications in SQLite, shared by every worker of the module and kept across restarts."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path

from modules.notifications.models import Notification
from runtime.fabric import OutboxBatch
from runtime.files import private_file


class SentLog:
    """Notifications in the order they were sent; each has a position (``seq``) pages start from."""

    def __init__(self, path: Path) -> None:
        private_file(path)  # 0600 in a 0700 folder: it holds people's addresses
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sent (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
            " user_id TEXT NOT NULL, body TEXT NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS sent_by_user ON sent (user_id, seq)")
        self._lock = threading.Lock()

    def _add(self, notification: Notification, first_only: bool, events: OutboxBatch | None = None) -> bool:
        row = (notification.id, notification.user_id, notification.model_dump_json())
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if first_only:  # one statement, so two workers cannot both welcome the same user
                    cursor = self._db.execute(
                        "INSERT INTO sent (id, user_id, body) SELECT ?, ?, ?"
                        " WHERE NOT EXISTS (SELECT 1 FROM sent WHERE user_id = ?)",
                        (*row, notification.user_id),
                    )
                else:
                    cursor = self._db.execute("INSERT INTO sent (id, user_id, body) VALUES (?, ?, ?)", row)
                added = cursor.rowcount == 1
                if added and events is not None:
                    events.write(self._db)  # the notification and its event: one transaction
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return added

    def _page(self, user_id: str, after: int, size: int) -> tuple[list[Notification], int, bool]:
        where, args = ("seq > ? AND user_id = ?", (after, user_id)) if user_id else ("seq > ?", (after,))
        with self._lock:
            rows = self._db.execute(
                f"SELECT seq, body FROM sent WHERE {where} ORDER BY seq LIMIT ?", (*args, size + 1)
            ).fetchall()
        page = rows[:size]
        last = page[-1][0] if page else after
        return [Notification.model_validate_json(row[1]) for row in page], last, len(rows) > size

    def _last(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM sent").fetchone()[0])

    async def add(self, notification: Notification) -> None:
        """Record ``notification`` as sent."""
        await asyncio.to_thread(self._add, notification, False)

    async def add_first(self, notification: Notification, events: OutboxBatch | None = None) -> bool:
        """Record ``notification`` unless its user already has one; whether it was recorded.
        ``events`` (``gctx.outbox()``) are saved with it, in one transaction, when it is."""
        return await asyncio.to_thread(self._add, notification, True, events)

    async def page(self, user_id: str, *, after: int, size: int) -> tuple[list[Notification], int, bool]:
        """Up to ``size`` notifications (of ``user_id``, or all) after position ``after``, oldest
        first; the position of the last one given, and whether more follow."""
        return await asyncio.to_thread(self._page, user_id, after, size)

    async def last(self) -> int:
        """The position of the newest notification (0 when none was sent)."""
        return await asyncio.to_thread(self._last)


_log: SentLog | None = None


def sent_log() -> SentLog:
    """The process's log of sent notifications, opened on first use under ``$MODRPC_DATA_DIR``."""
    global _log
    if _log is None:
        _log = SentLog(Path(os.environ.get("MODRPC_DATA_DIR", ".modrpc")) / "notifications.sqlite3")
    return _log
