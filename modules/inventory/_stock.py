"""Stock and reservations in SQLite, so a worker restart loses nothing."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import uuid
from pathlib import Path

from runtime.files import private_file

# Demo catalogue created on first start; a real deployment loads its own.
INITIAL_STOCK = {"WIDGET-1": 100, "GADGET-7": 25, "GIZMO-42": 3}


class OutOfStock(Exception):
    def __init__(self, sku: str, available: int) -> None:
        super().__init__(sku, available)
        self.sku = sku
        self.available = available


class UnknownSku(Exception):
    pass


class StockBook:
    """Reserve and release atomically: each operation is one SQLite transaction."""

    def __init__(self, path: Path) -> None:
        private_file(path)  # 0600 in a 0700 folder, like all the runtime's state
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, available INTEGER NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS reservations (id TEXT PRIMARY KEY, sku TEXT NOT NULL,"
            " quantity INTEGER NOT NULL, released INTEGER NOT NULL DEFAULT 0)"
        )
        self._db.executemany("INSERT OR IGNORE INTO stock VALUES (?, ?)", INITIAL_STOCK.items())
        self._lock = threading.Lock()

    def _reserve(self, sku: str, quantity: int) -> tuple[str, int]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT available FROM stock WHERE sku = ?", (sku,)).fetchone()
                if row is None:
                    raise UnknownSku(sku)
                if row[0] < quantity:
                    raise OutOfStock(sku, row[0])
                rid = uuid.uuid4().hex
                self._db.execute("UPDATE stock SET available = available - ? WHERE sku = ?", (quantity, sku))
                self._db.execute("INSERT INTO reservations VALUES (?, ?, ?, 0)", (rid, sku, quantity))
                self._db.execute("COMMIT")
                return rid, row[0] - quantity
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _release(self, rid: str) -> bool | None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT sku, quantity, released FROM reservations WHERE id = ?", (rid,)).fetchone()
                if row is None:
                    self._db.execute("ROLLBACK")
                    return None
                sku, quantity, released = row
                if released:
                    self._db.execute("ROLLBACK")
                    return False
                self._db.execute("UPDATE reservations SET released = 1 WHERE id = ?", (rid,))
                self._db.execute("UPDATE stock SET available = available + ? WHERE sku = ?", (quantity, sku))
                self._db.execute("COMMIT")
                return True
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _adjust(self, sku: str, delta: int) -> int:
        """Add ``delta`` units (negative: take them away, never below 0); a new SKU starts at 0."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR IGNORE INTO stock VALUES (?, 0)", (sku,))
                self._db.execute("UPDATE stock SET available = MAX(0, available + ?) WHERE sku = ?", (delta, sku))
                (level,) = self._db.execute("SELECT available FROM stock WHERE sku = ?", (sku,)).fetchone()
                self._db.execute("COMMIT")
                return int(level)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _available(self, sku: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT available FROM stock WHERE sku = ?", (sku,)).fetchone()
        return None if row is None else int(row[0])

    async def reserve(self, sku: str, quantity: int) -> tuple[str, int]:
        return await asyncio.to_thread(self._reserve, sku, quantity)

    async def release(self, rid: str) -> bool | None:
        """True when released now, False when it already was, None when unknown."""
        return await asyncio.to_thread(self._release, rid)

    async def adjust(self, sku: str, delta: int) -> int:
        """The stock of ``sku`` after adding ``delta`` units; one transaction."""
        return await asyncio.to_thread(self._adjust, sku, delta)

    async def available(self, sku: str) -> int | None:
        return await asyncio.to_thread(self._available, sku)


_book: StockBook | None = None


def stock_book() -> StockBook:
    global _book
    if _book is None:
        _book = StockBook(Path(os.environ.get("MODRPC_DATA_DIR", ".modrpc")) / "inventory.sqlite3")
    return _book
