"""The embedded backend: one SQLite file, no server to run.

Every sqlite3 call runs on one thread per store (a single-worker executor), so the event loop
never blocks on disk and the connection is never used by two threads at once. The database is in
WAL mode, so readers in other processes do not block the writer, and each write is one
``BEGIN IMMEDIATE`` transaction: taking the write lock up front means two writers queue on
``busy_timeout`` instead of failing when one tries to upgrade a read lock.

Watching: SQLite cannot notify, so every write also appends to the ``changes`` table in its own
transaction. A watch polls ``PRAGMA data_version`` on its own connection, which changes when any
other connection (in this process or another) commits, and only then reads the new ``changes``
rows. Writes made through this store also wake local watches at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from runtime.config import mask_url
from runtime.deadline import Clock
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from runtime.files import private_file
from runtime.store._errors import store_errors
from runtime.store._json import check_document, check_name, decode, encode
from runtime.store._migrations import SCHEMA_VERSION_TABLE, pending
from runtime.store._records import StoreEvent, VersionRecord, WorkerRecord
from runtime.store._retention import newest_past_budget
from runtime.store._rows import (
    VERSION_COLUMNS,
    WORKER_COLUMNS,
    label_events,
    labels_by_version,
    version_from_row,
    version_params,
    worker_from_row,
    worker_params,
)
from runtime.store._url import sqlite_path
from runtime.store._watch import Watch

__all__ = ["SqliteStore"]

T = TypeVar("T")
Body = Callable[[sqlite3.Connection], tuple[T, list[StoreEvent]]]

_PAST_BUDGET = newest_past_budget("qmark")

CHANGES_KEPT = 10_000
"""Rows of ``changes`` kept; a watch that falls further behind than this misses events."""


def _connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; writes say BEGIN IMMEDIATE themselves and
    # reads do not hold a snapshot open (which would keep the WAL from being checkpointed).
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        _switch_to_wal(conn, busy_timeout)
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the lock.

    Switching a new database to WAL needs an exclusive lock, and SQLite answers "database is
    locked" at once instead of calling the busy handler when another connection is doing the
    same (several processes starting on one new database). So it is retried here, within the
    same busy timeout every other statement gets.
    """
    give_up = time.monotonic() + busy_timeout
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= give_up:
                raise
        time.sleep(pause)  # in the store's own thread, never on the event loop
        pause = min(pause * 2, 0.1)


def _transaction(conn: sqlite3.Connection, body: Body[T]) -> T:
    """Run ``body`` and record its events in one transaction; nothing of it remains on failure."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result, events = body(conn)
        if events:
            conn.executemany(
                "INSERT INTO changes (kind, module, key) VALUES (?, ?, ?)",
                [(e.kind, e.module, e.key) for e in events],
            )
            conn.execute(
                "DELETE FROM changes WHERE id <= (SELECT MAX(id) FROM changes) - ?", (CHANGES_KEPT,)
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _labels(conn: sqlite3.Connection, module: str) -> dict[str, str]:
    rows = conn.execute("SELECT label, version_id FROM labels WHERE module = ?", (module,))
    return dict(rows.fetchall())


class SqliteStore:
    """The manifest store in a SQLite file. Build it with ``open_store("sqlite:///path.db")``."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = time.time,
        poll_interval: float = 0.15,
        busy_timeout: float = 5.0,
    ) -> None:
        self._url = mask_url(url)
        self._path = sqlite_path(url)
        self._clock = clock
        self._poll_interval = poll_interval
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._subscriptions: set[_Subscription] = set()

    @property
    def url(self) -> str:
        return self._url

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise FailedPrecondition(f"manifest store {self._url} is closed")
        if self._conn is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modrpc-store-sqlite")
        loop = asyncio.get_running_loop()
        try:
            with store_errors(self._url, connecting=True):
                conn = await loop.run_in_executor(executor, self._open)
            try:
                with store_errors(self._url):
                    await loop.run_in_executor(executor, self._migrate, conn)
            except BaseException:
                await loop.run_in_executor(executor, conn.close)
                raise
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor, self._conn = executor, conn

    def _open(self) -> sqlite3.Connection:
        # 0600 in a 0700 folder before sqlite3 creates it: it holds snapshots (whole requests)
        # and the audit stream; SQLite gives its -wal and -shm files the same permissions.
        private_file(self._path)
        return _connect(str(self._path), self._busy_timeout)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        def body(conn: sqlite3.Connection) -> tuple[None, list[StoreEvent]]:
            conn.execute(SCHEMA_VERSION_TABLE)
            current = conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version"
            ).fetchone()[0]
            for migration in pending(current, self._url):
                for statement in migration.sqlite:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, summary, applied_at) VALUES (?, ?, ?)",
                    (migration.number, migration.summary, self._clock()),
                )
            return None, []

        _transaction(conn, body)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            # Watches first, while their connections can still be closed on the store's thread.
            for subscription in list(self._subscriptions):
                await subscription.close()
            if self._executor is not None and self._conn is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        finally:
            executor, self._executor, self._conn = self._executor, None, None
            if executor is not None:
                executor.shutdown(wait=False)

    async def __aenter__(self) -> SqliteStore:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- running sqlite3 off the loop ----------------------------------------------------------

    def _running(self) -> ThreadPoolExecutor:
        # Closed counts from the moment close() begins, so nothing new queues behind it.
        if self._executor is None or self._closed:
            state = "closed" if self._closed else "not started"
            raise FailedPrecondition(f"manifest store {self._url} is {state}")
        return self._executor

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the store's thread, translating database errors."""
        executor = self._running()
        with store_errors(self._url):
            return await asyncio.get_running_loop().run_in_executor(executor, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._running()
        assert self._conn is not None
        return await self._in_thread(partial(fn, self._conn))

    async def _write(self, body: Body[T]) -> T:
        self._running()
        assert self._conn is not None
        result = await self._in_thread(partial(_transaction, self._conn, body))
        for subscription in self._subscriptions:
            subscription.nudge()
        return result

    # -- versions and labels ------------------------------------------------------------------

    async def put_version(self, module: str, record: VersionRecord) -> None:
        check_name(module, "module")
        params = version_params(record)

        def body(conn: sqlite3.Connection) -> tuple[None, list[StoreEvent]]:
            before = _labels(conn, module)
            conn.execute(
                f"INSERT INTO versions (module, {VERSION_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (module, version_id) DO UPDATE SET created_at = excluded.created_at,"
                " schema_json = excluded.schema_json, fingerprint = excluded.fingerprint,"
                " manifest = excluded.manifest, breaking = excluded.breaking,"
                " parent = excluded.parent, transformers = excluded.transformers,"
                " metadata = excluded.metadata",
                (module, *params),
            )
            dropped, events = label_events(module, before, record.id, record.labels)
            conn.executemany(
                "DELETE FROM labels WHERE module = ? AND label = ?",
                [(module, label) for label in dropped],
            )
            conn.executemany(
                "INSERT INTO labels (module, label, version_id) VALUES (?, ?, ?)"
                " ON CONFLICT (module, label) DO UPDATE SET version_id = excluded.version_id",
                [(module, label, record.id) for label in record.labels],
            )
            return None, [StoreEvent("version", module, record.id), *events]

        await self._write(body)

    async def get_version(self, module: str, version_id: str) -> VersionRecord:
        def query(conn: sqlite3.Connection) -> VersionRecord | None:
            row = conn.execute(
                f"SELECT {VERSION_COLUMNS} FROM versions WHERE module = ? AND version_id = ?",
                (module, version_id),
            ).fetchone()
            if row is None:
                return None
            labels = conn.execute(
                "SELECT label FROM labels WHERE module = ? AND version_id = ?", (module, version_id)
            ).fetchall()
            return version_from_row(row, (label for (label,) in labels))

        found = await self._read(query)
        if found is None:
            raise NotFound(f"module {module!r} has no version {version_id!r}")
        return found

    async def list_versions(self, module: str) -> list[VersionRecord]:
        def query(conn: sqlite3.Connection) -> list[VersionRecord]:
            rows = conn.execute(
                f"SELECT {VERSION_COLUMNS} FROM versions WHERE module = ? ORDER BY created_at, seq",
                (module,),
            ).fetchall()
            labels = labels_by_version(
                conn.execute("SELECT label, version_id FROM labels WHERE module = ?", (module,))
            )
            return [version_from_row(row, labels.get(row[0], ())) for row in rows]

        return await self._read(query)

    async def set_label(self, module: str, label: str, version_id: str) -> None:
        check_name(label, "label")

        def body(conn: sqlite3.Connection) -> tuple[None, list[StoreEvent]]:
            exists = conn.execute(
                "SELECT 1 FROM versions WHERE module = ? AND version_id = ?", (module, version_id)
            ).fetchone()
            if exists is None:
                raise NotFound(
                    f"cannot label {label!r}: module {module!r} has no version {version_id!r}"
                )
            before = conn.execute(
                "SELECT version_id FROM labels WHERE module = ? AND label = ?", (module, label)
            ).fetchone()
            if before is not None and before[0] == version_id:
                return None, []
            conn.execute(
                "INSERT INTO labels (module, label, version_id) VALUES (?, ?, ?)"
                " ON CONFLICT (module, label) DO UPDATE SET version_id = excluded.version_id",
                (module, label, version_id),
            )
            return None, [StoreEvent("label", module, label)]

        await self._write(body)

    async def labels(self, module: str) -> dict[str, str]:
        found = await self._read(partial(_labels, module=module))
        return dict(sorted(found.items()))

    async def modules(self) -> list[str]:
        def query(conn: sqlite3.Connection) -> list[str]:
            return [name for (name,) in conn.execute("SELECT DISTINCT module FROM versions")]

        return sorted(await self._read(query))

    # -- workers ------------------------------------------------------------------------------

    async def register_worker(self, worker: WorkerRecord) -> None:
        params = worker_params(worker)

        def body(conn: sqlite3.Connection) -> tuple[None, list[StoreEvent]]:
            conn.execute(
                f"INSERT OR REPLACE INTO workers ({WORKER_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                params,
            )
            return None, [StoreEvent("worker", worker.module, worker.id)]

        await self._write(body)

    async def deregister_worker(self, worker_id: str) -> None:
        def body(conn: sqlite3.Connection) -> tuple[None, list[StoreEvent]]:
            rows = conn.execute(
                "DELETE FROM workers WHERE id = ? RETURNING module", (worker_id,)
            ).fetchall()
            return None, [StoreEvent("worker", module, worker_id) for (module,) in rows]

        await self._write(body)

    async def set_worker_health(self, worker_id: str, healthy: bool) -> None:
        if not isinstance(healthy, bool):
            raise InvalidArgument(f"healthy must be a bool, got {healthy!r}")

        def body(conn: sqlite3.Connection) -> tuple[None, list[StoreEvent]]:
            rows = conn.execute(
                "UPDATE workers SET healthy = ? WHERE id = ? RETURNING module", (healthy, worker_id)
            ).fetchall()
            if not rows:
                raise NotFound(f"no worker {worker_id!r} is registered")
            return None, [StoreEvent("worker", rows[0][0], worker_id)]

        await self._write(body)

    async def heartbeat(self, worker_id: str) -> None:
        now = self._clock()

        def body(conn: sqlite3.Connection) -> tuple[None, list[StoreEvent]]:
            rows = conn.execute(
                "UPDATE workers SET last_seen = ? WHERE id = ? RETURNING id", (now, worker_id)
            ).fetchall()
            if not rows:
                raise NotFound(f"no worker {worker_id!r} is registered")
            return None, []

        await self._write(body)

    async def list_workers(self, module: str | None = None) -> list[WorkerRecord]:
        def query(conn: sqlite3.Connection) -> list[WorkerRecord]:
            if module is None:
                rows = conn.execute(f"SELECT {WORKER_COLUMNS} FROM workers")
            else:
                rows = conn.execute(
                    f"SELECT {WORKER_COLUMNS} FROM workers WHERE module = ?", (module,)
                )
            return [worker_from_row(row) for row in rows]

        return sorted(await self._read(query), key=lambda w: (w.module, w.id))

    # -- append-only log ----------------------------------------------------------------------

    async def append(self, stream: str, record: dict[str, Any]) -> int:
        check_name(stream, "stream")
        text = encode(check_document(record, "record"))

        size = len(text.encode())
        now = self._clock()

        def body(conn: sqlite3.Connection) -> tuple[int, list[StoreEvent]]:
            cursor = conn.execute(
                "INSERT INTO log (stream, record, created_at, size) VALUES (?, ?, ?, ?)",
                (stream, text, now, size),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid, []

        return await self._write(body)

    async def prune(
        self, stream: str, *, before: float | None = None, max_bytes: int | None = None
    ) -> int:
        check_name(stream, "stream")

        def body(conn: sqlite3.Connection) -> tuple[int, list[StoreEvent]]:
            removed = 0
            if before is not None:
                removed += conn.execute(
                    "DELETE FROM log WHERE stream = ? AND created_at < ?", (stream, before)
                ).rowcount
            if max_bytes is not None:
                row = conn.execute(_PAST_BUDGET, (stream, max_bytes)).fetchone()
                if row is not None:
                    removed += conn.execute(
                        "DELETE FROM log WHERE stream = ? AND id <= ?", (stream, row[0])
                    ).rowcount
            return removed, []

        return await self._write(body)

    async def read(
        self, stream: str, after: int = 0, limit: int = 100
    ) -> list[tuple[int, dict[str, Any]]]:
        if limit < 1:
            raise InvalidArgument(f"limit must be at least 1, got {limit}")

        def query(conn: sqlite3.Connection) -> list[tuple[int, dict[str, Any]]]:
            rows = conn.execute(
                "SELECT id, record FROM log WHERE stream = ? AND id > ? ORDER BY id LIMIT ?",
                (stream, after, limit),
            )
            return [(entry_id, decode(text)) for entry_id, text in rows]

        return await self._read(query)

    # -- change feed --------------------------------------------------------------------------

    def watch(self) -> Watch:
        return Watch(self._subscribe)

    async def _subscribe(self) -> _Subscription:
        subscription = _Subscription(self)
        await subscription.open()
        if self._closed:  # closed while the watch was connecting
            await subscription.close()
            raise FailedPrecondition(f"manifest store {self._url} is closed")
        self._subscriptions.add(subscription)
        return subscription


class _Subscription:
    """One watch's own connection, polled on the store's thread."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._conn: sqlite3.Connection | None = None
        self._data_version = -1
        self._last_id = 0
        self._nudged = asyncio.Event()
        self._closed = False

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            conn = _connect(str(self._store._path), self._store._busy_timeout)
            # data_version first. Read the other way round, a commit landing between the two
            # reads would be in neither: past _last_id, yet already in the baseline version.
            self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            self._last_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM changes").fetchone()[0]
            return conn

        self._conn = await self._store._in_thread(connect)

    def nudge(self) -> None:
        self._nudged.set()

    async def next_events(self) -> list[StoreEvent] | None:
        while not (self._closed or self._store._closed):
            self._nudged.clear()
            events = await self._store._in_thread(self._poll)
            if events:
                return events
            try:
                async with asyncio.timeout(self._store._poll_interval):
                    await self._nudged.wait()
            except TimeoutError:
                pass  # time to poll again
        return None

    def _poll(self) -> list[StoreEvent]:
        conn = self._conn
        if conn is None:
            return []
        data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        if data_version == self._data_version:
            return []
        self._data_version = data_version
        rows = conn.execute(
            "SELECT id, kind, module, key FROM changes WHERE id > ? ORDER BY id", (self._last_id,)
        ).fetchall()
        if rows:
            self._last_id = rows[-1][0]
        return [StoreEvent(kind, module, key) for _, kind, module, key in rows]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._nudged.set()
        self._store._subscriptions.discard(self)
        conn, self._conn = self._conn, None
        if conn is None:
            return
        executor = self._store._executor
        if executor is None:
            conn.close()
        else:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
