"""The distributed backend: PostgreSQL through asyncpg, shared by every gateway and worker.

The store keeps a small connection pool for reads and writes, and each watch holds one more
connection of its own for LISTEN, so watches never starve the pool. Writes send their events
with ``pg_notify`` inside the writing transaction, so PostgreSQL delivers them on commit and
never for a write that rolled back.

Tables live in one PostgreSQL schema (``?schema=name`` on the URL, default ``public``); every
connection gets it as its ``search_path``, and the notification channel is named after it, so
stores in different schemas of one database do not see each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from runtime.config import mask_url
from runtime.deadline import Clock
from runtime.errors import FailedPrecondition, InvalidArgument, ModrpcError, NotFound, Unavailable
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
from runtime.store._url import postgres_target
from runtime.store._watch import Watch

__all__ = ["PostgresStore"]

_PAST_BUDGET = newest_past_budget("numeric")

T = TypeVar("T")
if TYPE_CHECKING:  # asyncpg's classes are generic only in its type stubs
    Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    Body: TypeAlias = Callable[[Conn], Awaitable[tuple[T, list[StoreEvent]]]]

CLOSE_GRACE = 5.0
"""Seconds ``close()`` waits for borrowed connections to come back before cutting them off."""
OPERATION_TIMEOUT = 5.0
"""Seconds one operation (borrowing a connection included) may take before it is Unavailable:
a server that hangs (connections open, nothing answers) must not hang its callers."""


def _lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``parts`` (PostgreSQL's hashtext is 32-bit)."""
    digest = hashlib.sha256("\x1f".join(("modrpc_store", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresStore:
    """The manifest store in PostgreSQL. Build it with ``open_store("postgresql://...")``."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = time.time,
        pool_size: int = 5,
        connect_timeout: float = 10.0,
        operation_timeout: float = OPERATION_TIMEOUT,
    ) -> None:
        target = postgres_target(url)
        self._url = mask_url(url)
        self._dsn = target.dsn
        self._schema = target.schema
        self._channel = f"modrpc_store_{target.schema}"
        self._clock = clock
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._operation_timeout = operation_timeout
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._closed = False
        self._subscriptions: set[_Subscription] = set()

    @property
    def url(self) -> str:
        return self._url

    def _server_settings(self, role: str) -> dict[str, str]:
        # application_name names the schema so a connection can be traced to its store.
        return {
            "search_path": self._schema,
            "application_name": f"modrpc-store-{role}:{self._schema}"[:63],
        }

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise FailedPrecondition(f"manifest store {self._url} is closed")
        if self._pool is not None:
            return
        with store_errors(self._url, connecting=True):
            pool = await asyncpg.create_pool(
                self._dsn,
                # No floor: asyncpg would keep reconnecting to restore it through an outage,
                # logging a traceback each time; connections are opened when needed instead.
                min_size=0,
                max_size=self._pool_size,
                timeout=self._connect_timeout,
                server_settings=self._server_settings("pool"),
            )
        try:
            with store_errors(self._url):
                async with pool.acquire() as conn:
                    await self._migrate(conn)
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool

    async def _migrate(self, conn: Conn) -> None:
        async with conn.transaction():
            # Held to the end of the transaction: concurrent starts migrate one after another,
            # and the later ones find nothing left to do.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1)", _lock_key("migrate", self._schema)
            )
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1", self._schema
            )
            if exists is None:
                await conn.execute(f'CREATE SCHEMA "{self._schema}"')
            await conn.execute(SCHEMA_VERSION_TABLE)
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            for migration in pending(current, self._url):
                for statement in migration.postgres:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_version (version, summary, applied_at) VALUES ($1, $2, $3)",
                    migration.number,
                    migration.summary,
                    self._clock(),
                )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pool, self._pool = self._pool, None
        try:
            for subscription in list(self._subscriptions):
                await subscription.close()
        finally:
            if pool is not None:
                try:
                    async with asyncio.timeout(CLOSE_GRACE):
                        await pool.close()
                except TimeoutError:
                    pool.terminate()  # queries still running after the grace period are cut off
                except BaseException:
                    pool.terminate()
                    raise

    async def __aenter__(self) -> PostgresStore:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- running queries -----------------------------------------------------------------------

    def _running(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            state = "closed" if self._closed else "not started"
            raise FailedPrecondition(f"manifest store {self._url} is {state}")
        return self._pool

    @contextlib.asynccontextmanager
    async def _bounded(self) -> AsyncIterator[Conn]:
        """A pooled connection for one operation, all of it within the operation timeout.

        The pool gets the timeout too: after a timed-out query asyncpg waits for the server to
        confirm the cancellation before it gives the connection back, and a hung server never
        does; with a timeout it cuts the connection off instead.
        """
        pool = self._running()
        # Half for the work, half for giving the connection back (or cutting it off).
        half = self._operation_timeout / 2
        with store_errors(self._url):
            try:
                async with asyncio.timeout(half), pool.acquire(timeout=half) as conn:
                    yield conn
            except TimeoutError as exc:
                raise Unavailable(
                    f"manifest store {self._url} is unavailable: no answer within "
                    f"{self._operation_timeout:g}s"
                ) from exc

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        async with self._bounded() as conn:
            return await fn(conn)

    async def _write(self, body: Body[T]) -> T:
        """Run ``body`` in one transaction and notify its events when (and only if) it commits."""
        async with self._bounded() as conn, conn.transaction():
            result, events = await body(conn)
            for event in events:
                await conn.execute(
                    "SELECT pg_notify($1, $2)", self._channel, encode(event.to_json())
                )
        return result

    # -- versions and labels ------------------------------------------------------------------

    async def put_version(self, module: str, record: VersionRecord) -> None:
        check_name(module, "module")
        params = version_params(record)

        async def body(conn: Conn) -> tuple[None, list[StoreEvent]]:
            # One writer of a module's versions and labels at a time: workers of one module
            # starting together publish the same records, and row locks taken in different
            # orders (labels, versions) would deadlock them.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key("module", self._schema, module))
            # Lock the module's labels so a concurrent put cannot move one under us.
            rows = await conn.fetch(
                "SELECT label, version_id FROM labels WHERE module = $1 FOR UPDATE", module
            )
            before = {row[0]: row[1] for row in rows}
            await conn.execute(
                f"INSERT INTO versions (module, {VERSION_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                " ON CONFLICT (module, version_id) DO UPDATE SET created_at = excluded.created_at,"
                " schema_json = excluded.schema_json, fingerprint = excluded.fingerprint,"
                " manifest = excluded.manifest, breaking = excluded.breaking,"
                " parent = excluded.parent, transformers = excluded.transformers,"
                " metadata = excluded.metadata",
                module,
                *params,
            )
            dropped, events = label_events(module, before, record.id, record.labels)
            if dropped:
                await conn.execute(
                    "DELETE FROM labels WHERE module = $1 AND label = ANY($2::text[])",
                    module,
                    dropped,
                )
            for label in record.labels:
                await conn.execute(
                    "INSERT INTO labels (module, label, version_id) VALUES ($1, $2, $3)"
                    " ON CONFLICT (module, label) DO UPDATE SET version_id = excluded.version_id",
                    module,
                    label,
                    record.id,
                )
            return None, [StoreEvent("version", module, record.id), *events]

        await self._write(body)

    async def get_version(self, module: str, version_id: str) -> VersionRecord:
        async def query(conn: Conn) -> VersionRecord | None:
            row = await conn.fetchrow(
                f"SELECT {VERSION_COLUMNS} FROM versions WHERE module = $1 AND version_id = $2",
                module,
                version_id,
            )
            if row is None:
                return None
            labels = await conn.fetch(
                "SELECT label FROM labels WHERE module = $1 AND version_id = $2", module, version_id
            )
            return version_from_row(row, (label[0] for label in labels))

        found = await self._read(query)
        if found is None:
            raise NotFound(f"module {module!r} has no version {version_id!r}")
        return found

    async def list_versions(self, module: str) -> list[VersionRecord]:
        async def query(conn: Conn) -> list[VersionRecord]:
            rows = await conn.fetch(
                f"SELECT {VERSION_COLUMNS} FROM versions WHERE module = $1"
                " ORDER BY created_at, seq",
                module,
            )
            labels = labels_by_version(
                await conn.fetch("SELECT label, version_id FROM labels WHERE module = $1", module)
            )
            return [version_from_row(row, labels.get(row[0], ())) for row in rows]

        return await self._read(query)

    async def set_label(self, module: str, label: str, version_id: str) -> None:
        check_name(label, "label")

        async def body(conn: Conn) -> tuple[None, list[StoreEvent]]:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key("module", self._schema, module))
            exists = await conn.fetchval(
                "SELECT 1 FROM versions WHERE module = $1 AND version_id = $2 FOR SHARE",
                module,
                version_id,
            )
            if exists is None:
                raise NotFound(
                    f"cannot label {label!r}: module {module!r} has no version {version_id!r}"
                )
            before = await conn.fetchval(
                "SELECT version_id FROM labels WHERE module = $1 AND label = $2 FOR UPDATE",
                module,
                label,
            )
            if before == version_id:
                return None, []
            await conn.execute(
                "INSERT INTO labels (module, label, version_id) VALUES ($1, $2, $3)"
                " ON CONFLICT (module, label) DO UPDATE SET version_id = excluded.version_id",
                module,
                label,
                version_id,
            )
            return None, [StoreEvent("label", module, label)]

        await self._write(body)

    async def labels(self, module: str) -> dict[str, str]:
        async def query(conn: Conn) -> dict[str, str]:
            rows = await conn.fetch(
                "SELECT label, version_id FROM labels WHERE module = $1", module
            )
            return {row[0]: row[1] for row in rows}

        return dict(sorted((await self._read(query)).items()))

    async def modules(self) -> list[str]:
        async def query(conn: Conn) -> list[str]:
            return [row[0] for row in await conn.fetch("SELECT DISTINCT module FROM versions")]

        # Sorted here, not in SQL: PostgreSQL orders text by its collation, SQLite by bytes.
        return sorted(await self._read(query))

    # -- workers ------------------------------------------------------------------------------

    async def register_worker(self, worker: WorkerRecord) -> None:
        params = worker_params(worker)

        async def body(conn: Conn) -> tuple[None, list[StoreEvent]]:
            await conn.execute(
                f"INSERT INTO workers ({WORKER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (id) DO UPDATE SET module = excluded.module,"
                " address = excluded.address, versions = excluded.versions,"
                " healthy = excluded.healthy, pid = excluded.pid,"
                " started_at = excluded.started_at, last_seen = excluded.last_seen",
                *params,
            )
            return None, [StoreEvent("worker", worker.module, worker.id)]

        await self._write(body)

    async def deregister_worker(self, worker_id: str) -> None:
        async def body(conn: Conn) -> tuple[None, list[StoreEvent]]:
            module = await conn.fetchval(
                "DELETE FROM workers WHERE id = $1 RETURNING module", worker_id
            )
            return None, [] if module is None else [StoreEvent("worker", module, worker_id)]

        await self._write(body)

    async def set_worker_health(self, worker_id: str, healthy: bool) -> None:
        if not isinstance(healthy, bool):
            raise InvalidArgument(f"healthy must be a bool, got {healthy!r}")

        async def body(conn: Conn) -> tuple[None, list[StoreEvent]]:
            module = await conn.fetchval(
                "UPDATE workers SET healthy = $1 WHERE id = $2 RETURNING module", healthy, worker_id
            )
            if module is None:
                raise NotFound(f"no worker {worker_id!r} is registered")
            return None, [StoreEvent("worker", module, worker_id)]

        await self._write(body)

    async def heartbeat(self, worker_id: str) -> None:
        now = self._clock()

        async def body(conn: Conn) -> tuple[None, list[StoreEvent]]:
            found = await conn.fetchval(
                "UPDATE workers SET last_seen = $1 WHERE id = $2 RETURNING id", now, worker_id
            )
            if found is None:
                raise NotFound(f"no worker {worker_id!r} is registered")
            return None, []

        await self._write(body)

    async def list_workers(self, module: str | None = None) -> list[WorkerRecord]:
        async def query(conn: Conn) -> list[WorkerRecord]:
            if module is None:
                rows = await conn.fetch(f"SELECT {WORKER_COLUMNS} FROM workers")
            else:
                rows = await conn.fetch(
                    f"SELECT {WORKER_COLUMNS} FROM workers WHERE module = $1", module
                )
            return [worker_from_row(row) for row in rows]

        return sorted(await self._read(query), key=lambda w: (w.module, w.id))

    # -- append-only log ----------------------------------------------------------------------

    async def append(self, stream: str, record: dict[str, Any]) -> int:
        check_name(stream, "stream")
        text = encode(check_document(record, "record"))
        size = len(text.encode())
        now = self._clock()

        async def body(conn: Conn) -> tuple[int, list[StoreEvent]]:
            # Ids come from a sequence, and transactions can commit out of sequence order; a
            # reader paging with ``after`` would then skip an id that commits late. Appends to
            # one stream take turns, so within a stream ids become visible in order.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1)", _lock_key("log", self._schema, stream)
            )
            entry_id = await conn.fetchval(
                "INSERT INTO log (stream, record, created_at, size) VALUES ($1, $2, $3, $4) RETURNING id",
                stream, text, now, size,
            )  # fmt: skip
            assert isinstance(entry_id, int)
            return entry_id, []

        return await self._write(body)

    async def prune(
        self, stream: str, *, before: float | None = None, max_bytes: int | None = None
    ) -> int:
        check_name(stream, "stream")

        async def body(conn: Conn) -> tuple[int, list[StoreEvent]]:
            removed = 0
            if before is not None:
                status = await conn.execute(
                    "DELETE FROM log WHERE stream = $1 AND created_at < $2", stream, before
                )
                removed += int(status.split()[-1])
            if max_bytes is not None:
                cutoff = await conn.fetchval(_PAST_BUDGET, stream, max_bytes)
                if cutoff is not None:
                    status = await conn.execute(
                        "DELETE FROM log WHERE stream = $1 AND id <= $2", stream, cutoff
                    )
                    removed += int(status.split()[-1])
            return removed, []

        return await self._write(body)

    async def read(
        self, stream: str, after: int = 0, limit: int = 100
    ) -> list[tuple[int, dict[str, Any]]]:
        if limit < 1:
            raise InvalidArgument(f"limit must be at least 1, got {limit}")

        async def query(conn: Conn) -> list[tuple[int, dict[str, Any]]]:
            rows = await conn.fetch(
                "SELECT id, record FROM log WHERE stream = $1 AND id > $2 ORDER BY id LIMIT $3",
                stream,
                after,
                limit,
            )
            return [(row[0], decode(row[1])) for row in rows]

        return await self._read(query)

    # -- change feed --------------------------------------------------------------------------

    def watch(self) -> Watch:
        return Watch(self._subscribe)

    async def _subscribe(self) -> _Subscription:
        self._running()
        subscription = _Subscription(self)
        with store_errors(self._url, connecting=True):
            await subscription.open()
        if self._closed:  # closed while the watch was connecting
            await subscription.close()
            raise FailedPrecondition(f"manifest store {self._url} is closed")
        self._subscriptions.add(subscription)
        return subscription


class _Subscription:
    """A LISTEN on a connection of its own; notifications queue here until the watch reads them."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        self._events: deque[StoreEvent] = deque()
        self._ready = asyncio.Event()
        self._lost: ModrpcError | None = None
        self._closed = False

    async def open(self) -> None:
        store = self._store
        conn = await asyncpg.connect(
            store._dsn,
            timeout=store._connect_timeout,
            server_settings=store._server_settings("watch"),
        )
        try:
            conn.add_termination_listener(self._on_terminated)
            await conn.add_listener(store._channel, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        assert isinstance(payload, str)
        self._events.append(StoreEvent.from_json(decode(payload)))
        self._ready.set()

    def _on_terminated(self, conn: object) -> None:
        if not self._closed:
            self._lost = Unavailable(
                f"manifest store {self._store._url}: the watch lost its connection"
            )
            self._ready.set()

    async def next_events(self) -> list[StoreEvent] | None:
        while not self._events:
            if self._closed:
                return None
            if self._lost is not None:
                raise self._lost
            self._ready.clear()
            await self._ready.wait()
        batch = list(self._events)
        self._events.clear()
        return batch

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        self._store._subscriptions.discard(self)
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.remove_listener(self._store._channel, self._on_notify)  # UNLISTEN
            await conn.close(timeout=2.0)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            conn.terminate()  # the connection is gone already; nothing is left to release
        except BaseException:
            conn.terminate()
            raise
