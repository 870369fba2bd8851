"""Placed orders in SQLite, shared by every worker of the module and kept across restarts."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path

from modules.orders.models import Order
from runtime.files import private_file


class OrderBook:
    """Orders by id, each stored as its JSON; calls run in a thread so the event loop never blocks."""

    def __init__(self, path: Path) -> None:
        private_file(path)  # 0600 in a 0700 folder: it holds people's orders
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        self._lock = threading.Lock()

    def _put(self, order: Order) -> None:
        with self._lock:
            self._db.execute("INSERT INTO orders VALUES (?, ?)", (order.id, order.model_dump_json()))

    def _get(self, order_id: str) -> Order | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM orders WHERE id = ?", (order_id,)).fetchone()
        return None if row is None else Order.model_validate_json(row[0])

    async def put(self, order: Order) -> None:
        await asyncio.to_thread(self._put, order)

    async def get(self, order_id: str) -> Order | None:
        return await asyncio.to_thread(self._get, order_id)


_book: OrderBook | None = None


def order_book() -> OrderBook:
    """The process's order book, opened on first use under ``$MODRPC_DATA_DIR`` (``.modrpc``)."""
    global _book
    if _book is None:
        _book = OrderBook(Path(os.environ.get("MODRPC_DATA_DIR", ".modrpc")) / "orders.sqlite3")
    return _book
