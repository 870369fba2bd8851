"""The transactional outbox: messages committed locally first, published when the fabric takes them.

A handler's ``gctx.publish`` must not be lost because the fabric is down at that moment, and
must not go out for a call that failed. So a message is never published from the call itself:

1. **Staged**: during the call it is only checked (topic, headers, size) and kept with the call.
2. **Committed** when the handler succeeds, in a SQLite table (``modrpc_outbox``):
   * in the module's own database, in the same transaction as the module's own write, when the
     module does that (:meth:`OutboxBatch.write`): the row and its events commit together or
     not at all, so a saved user always gets its ``users.created`` and an unsaved one never;
   * otherwise in the worker's local outbox (``<data_dir>/outbox/<module>.sqlite3``) before the
     response is sent: once the caller has its answer the message is on disk.
3. **Relayed** by :class:`OutboxRelay`, in the worker: oldest first, each with its message id
   (the publisher's ``msg_id``, or one made at staging) so a publish repeated after a lost
   acknowledgement is deduplicated by the fabric; a row is deleted once the fabric accepted it.
   While the fabric is unavailable the rows wait, the relay retries with backoff and says so in
   the log (how many wait, and why); when it is back, it says how many it delivered.

Delivery is therefore at least once: a relay that dies between the fabric's acknowledgement and
the delete publishes that message again, with the same id. Rows are claimed with a lease, so
the workers of one module share its databases without publishing a row twice at the same time,
and a dead worker's rows are taken over once its lease runs out. A row the fabric refuses for
good (not a question of availability) is kept, marked with the error, and logged as an error: it
is never dropped silently.

    relay = OutboxRelay(fabric, Path(".modrpc/outbox/users.sqlite3"))
    await relay.start()
    await relay.put([OutgoingMessage.build("users.created", b"{}", msg_id="users.created:42")])
    ...
    await relay.stop(grace=5.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import DeadlineExceeded, ModrpcError, ResourceExhausted, Unavailable
from runtime.fabric._types import (
    Fabric,
    FabricOptions,
    check_msg_id,
    check_publish,
    check_topic,
    inject_trace,
    outgoing_headers,
)
from runtime.files import private_file

__all__ = ["OutboxBatch", "OutboxRelay", "OutgoingMessage"]

log = logging.getLogger("modrpc.fabric.outbox")

TABLE = "modrpc_outbox"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    data BLOB NOT NULL,
    headers TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    ttl REAL,
    priority INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    published_at REAL
)
"""
_SOURCES = "CREATE TABLE IF NOT EXISTS modrpc_outbox_sources (path TEXT PRIMARY KEY)"

MAX_PENDING = 100_000
"""Messages the local outbox holds before further commits are refused (RESOURCE_EXHAUSTED):
past that the fabric has been gone so long that holding more would only move the problem."""
LEASE_SECONDS = 30.0
"""How long a claimed row is left to its relay before another may take it."""
BATCH = 100
"""Rows claimed at a time."""
POLL_SECONDS = 1.0
"""How often the relay looks for rows committed by other processes (a dead worker's)."""
BACKOFF_SECONDS = (0.1, 5.0)
"""First and longest wait before trying an unavailable fabric again."""
REPORT_SECONDS = 30.0
"""How often a fabric outage is reported while it lasts."""
KEEP_SECONDS = 10.0
"""How long a message is kept after the fabric acknowledged it. A server that goes down just
after acknowledging may not have kept the message (seen with NATS 2.9 stopped under load: an
acknowledged publish was gone after its restart), so when the fabric comes back from an outage,
what it acknowledged this shortly before the outage is published again. Its message id lets the
fabric drop it if it did keep it; otherwise subscribers see it at least once, as promised."""
_TRANSIENT = (Unavailable, DeadlineExceeded, ResourceExhausted)
"""What the fabric says when it cannot take a message now but may later."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to publish, checked and with its trace context and id fixed at staging."""

    topic: str
    data: bytes
    headers: Mapping[str, str]
    msg_id: str | None
    ttl: float | None = None
    priority: int = 0
    created: float = field(default_factory=time.time)

    @classmethod
    def build(
        cls,
        topic: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        msg_id: str | None = None,
        ttl: float | None = None,
        priority: int = 0,
        options: object = None,
        with_id: bool = True,
    ) -> OutgoingMessage:
        """Check everything a publish would check, now, so a bad message fails its call.

        The current trace context goes into the headers here: the relay publishes later, from
        a task of its own. Without ``msg_id`` the message gets a fresh one (for deduplication)
        unless ``with_id`` is false. ``options``: the fabric's (its message size limit), if it
        has :class:`FabricOptions`.
        """
        check_topic(topic)
        check_publish(options if isinstance(options, FabricOptions) else FabricOptions(), topic, data, ttl, None)
        sent = inject_trace(outgoing_headers(headers, None) or {})
        if msg_id is not None:
            msg_id = check_msg_id(msg_id)
        elif with_id:
            msg_id = uuid.uuid4().hex
        return cls(topic, data, sent, msg_id, ttl, priority)

    def row(self) -> tuple[object, ...]:
        return (self.topic, self.data, json.dumps(dict(self.headers)), self.msg_id, self.ttl, self.priority, self.created)


_INSERT = f"INSERT INTO {TABLE} (topic, data, headers, msg_id, ttl, priority, created) VALUES (?, ?, ?, ?, ?, ?, ?)"


class OutboxBatch:
    """The messages one call published, until the call ends.

    A module that writes to its own SQLite database commits them with that write: call
    :meth:`write` on its connection inside the transaction. Whatever it did not write that way
    is committed to the worker's local outbox when the handler succeeds, and dropped when it
    fails. Without a relay (a context built by hand, as in tests) :meth:`write` writes nothing
    and the messages are published when the handler succeeds.

        def insert(db: sqlite3.Connection, row: tuple, events: OutboxBatch) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT INTO users VALUES (?, ?, ?)", row)
                events.write(db)        # the user and its users.created commit together
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
    """

    __slots__ = ("_lock", "_relay", "messages", "written")

    def __init__(self, relay: OutboxRelay | None) -> None:
        self._relay = relay
        self._lock = threading.Lock()
        self.messages: list[OutgoingMessage] = []
        self.written = 0
        """How many of :attr:`messages` went into the module's own database."""

    def add(self, message: OutgoingMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def write(self, db: sqlite3.Connection) -> None:
        """Insert the messages staged so far into ``db``'s outbox table, in its open transaction.

        Blocking (it runs where the module's database code runs, usually a thread). The relay
        learns of the database and drains it from then on, in every worker of the module. If
        the transaction rolls back, the call must fail too (it normally does: the write failed).
        """
        if self._relay is None:
            return
        with self._lock:
            messages = self.messages[self.written :]
            self.written = len(self.messages)
        if not messages:
            return
        path = _database_path(db)
        if path is None:
            raise ValueError("an outbox needs a database file, not an in-memory database")
        self._relay.adopt(path)  # before the commit: a crash after it still leaves the rows found
        db.execute(_SCHEMA)
        db.executemany(_INSERT, [m.row() for m in messages])

    def discard(self) -> None:
        """Drop the messages staged and not yet written: the call decided, after publishing, that
        they must not go (a redelivered event it had handled already, say)."""
        with self._lock:
            del self.messages[self.written :]

    def unwritten(self) -> list[OutgoingMessage]:
        with self._lock:
            return self.messages[self.written :]


def _database_path(db: sqlite3.Connection) -> Path | None:
    for _, name, file in db.execute("PRAGMA database_list"):
        if name == "main":
            return Path(file).resolve() if file else None
    return None


class _Table:
    """The outbox table of one SQLite database, from the relay's side (blocking calls).

    The worker's own outbox is created private (``0600``: events carry callers' data); a
    module's database is the module's, and is opened as it is.
    """

    def __init__(self, path: Path, *, own: bool = False) -> None:
        self.path = path
        if own:
            private_file(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({TABLE})")}
        if "published_at" not in columns:  # a table made before messages were kept after their ack
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it first
                self._db.execute(f"ALTER TABLE {TABLE} ADD COLUMN published_at REAL")
        self._lock = threading.Lock()

    def put(self, messages: Sequence[OutgoingMessage]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(_INSERT, [m.row() for m in messages])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def claim(self, limit: int, lease: float) -> list[tuple[int, OutgoingMessage]]:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    f"SELECT seq, topic, data, headers, msg_id, ttl, priority, created FROM {TABLE}"
                    " WHERE lease_until <= ? AND error IS NULL AND published_at IS NULL ORDER BY seq LIMIT ?",
                    (now, limit),
                ).fetchall()
                if rows:
                    self._db.executemany(
                        f"UPDATE {TABLE} SET lease_until = ?, attempts = attempts + 1 WHERE seq = ?",
                        [(now + lease, row[0]) for row in rows],
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [
            (seq, OutgoingMessage(topic, bytes(data), json.loads(headers), msg_id, ttl, priority, created))
            for seq, topic, data, headers, msg_id, ttl, priority, created in rows
        ]

    def done(self, seqs: Iterable[int]) -> None:
        """The fabric took these: they are kept a while (see :data:`KEEP_SECONDS`)."""
        now = time.time()
        with self._lock:
            self._db.executemany(f"UPDATE {TABLE} SET published_at = ? WHERE seq = ?", [(now, s) for s in seqs])

    def purge(self, before: float) -> None:
        """Drop what the fabric took before ``before`` (unix seconds)."""
        with self._lock:
            self._db.execute(f"DELETE FROM {TABLE} WHERE published_at < ?", (before,))

    def again(self, since: float, until: float) -> int:
        """Publish again what the fabric took from ``since`` until before ``until`` (unix
        seconds); how many."""
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE {TABLE} SET published_at = NULL, lease_until = 0"
                " WHERE published_at >= ? AND published_at < ?",
                (since, until),
            )
            return cursor.rowcount

    def release(self, seqs: Iterable[int]) -> None:
        with self._lock:
            self._db.executemany(f"UPDATE {TABLE} SET lease_until = 0 WHERE seq = ?", [(s,) for s in seqs])

    def fail(self, seq: int, error: str) -> None:
        with self._lock:
            self._db.execute(f"UPDATE {TABLE} SET error = ? WHERE seq = ?", (error, seq))

    def pending(self) -> int:
        with self._lock:
            row = self._db.execute(
                f"SELECT COUNT(*) FROM {TABLE} WHERE error IS NULL AND published_at IS NULL"
            ).fetchone()
        return int(row[0])

    def sources(self) -> list[Path]:
        with self._lock:
            self._db.execute(_SOURCES)
            return [Path(row[0]) for row in self._db.execute("SELECT path FROM modrpc_outbox_sources")]

    def add_source(self, path: Path) -> None:
        with self._lock:
            self._db.execute(_SOURCES)
            self._db.execute("INSERT OR IGNORE INTO modrpc_outbox_sources VALUES (?)", (str(path),))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class OutboxRelay:
    """Publishes what the outboxes of one module hold, in the background, until stopped.

    ``local`` is the worker's own outbox database; module databases that :meth:`OutboxBatch.write`
    wrote to are recorded in it and drained too, by every worker of the module.
    """

    def __init__(self, fabric: Fabric, local: Path, *, max_pending: int = MAX_PENDING, poll: float = POLL_SECONDS) -> None:
        self._fabric = fabric
        self._local_path = local
        self._max_pending = max_pending
        self._poll = poll
        self._tables: dict[Path, _Table] = {}
        self._local: _Table | None = None
        self._adopted: set[Path] = set()
        self._adopting = threading.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = 0
        self._stopping = False
        self.published = 0
        """Messages the fabric accepted from this relay."""
        self._down_since: float | None = None
        self._down_at = 0.0
        """Wall-clock time of the outage's first failure (what the fabric took just before is
        published again when it is back)."""
        self._held_back = 0
        self._reported = 0.0

    @property
    def options(self) -> FabricOptions | None:
        options = getattr(self._fabric, "options", None)
        return options if isinstance(options, FabricOptions) else None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._local = await asyncio.to_thread(functools.partial(_Table, self._local_path, own=True))
        self._tables[self._local_path.resolve()] = self._local
        for path in await asyncio.to_thread(self._local.sources):
            await self._open(path)
        self._pending = await asyncio.to_thread(self._local.pending)
        if self._pending:
            log.warning("the outbox %s holds %d messages from before; publishing them", self._local_path, self._pending)
        self._task = asyncio.create_task(self._run(), name="modrpc-outbox-relay")

    async def _open(self, path: Path) -> None:
        if path in self._tables:
            return
        try:
            self._tables[path] = await asyncio.to_thread(_Table, path)
        except sqlite3.Error as exc:
            log.error("cannot open the outbox in %s (%s); its messages wait until it can be", path, exc)
            return
        self.wake()  # rows committed before the table was open go now, not at the next poll

    def batch(self) -> OutboxBatch:
        """A batch for one call's messages."""
        return OutboxBatch(self)

    def adopt(self, path: Path) -> None:
        """A module database now holds outbox rows: record it (durably) and drain it. Blocking,
        callable from any thread."""
        with self._adopting:
            if path in self._adopted:
                return
            if self._local is not None:
                self._local.add_source(path)
            self._adopted.add(path)
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(lambda: loop.create_task(self._open(path)))

    async def commit(self, batch: OutboxBatch) -> None:
        """Make ``batch`` durable: what the module did not write itself goes to the local outbox.

        Raises ResourceExhausted when the local outbox is full, Unavailable when it cannot be
        written; either fails the call, which is then not answered as a success.
        """
        messages = batch.unwritten()
        if messages:
            await self.put(messages)
        if batch.written:
            self.wake()

    async def put(self, messages: Sequence[OutgoingMessage]) -> None:
        """Commit ``messages`` to the local outbox and wake the relay."""
        local = self._local
        if local is None:
            raise Unavailable("the outbox is not open")
        if self._pending + len(messages) > self._max_pending:
            raise ResourceExhausted(
                f"the outbox holds {self._pending} messages the fabric has not taken "
                f"(at most {self._max_pending}); the fabric has been unavailable too long"
            )
        try:
            await asyncio.to_thread(local.put, messages)
        except sqlite3.Error as exc:
            raise Unavailable(f"the outbox {self._local_path} cannot be written: {exc}") from exc
        self._pending += len(messages)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    @property
    def pending(self) -> int:
        """Messages waiting in the local outbox (as last counted)."""
        return self._pending

    async def _run(self) -> None:
        backoff = BACKOFF_SECONDS[0]
        while not self._stopping:
            # Cleared before the round, not after it: a commit (or a table opened) during the
            # round wakes the idle wait below at once instead of waiting out the poll.
            self._wake.clear()
            try:
                delivered = await self._round()
            except asyncio.CancelledError:
                raise
            except _TRANSIENT as exc:
                await self._down(exc)
                await self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_SECONDS[1])
                continue
            except Exception as exc:
                log.error("the outbox relay failed (%s); trying again", exc, exc_info=exc)
                await self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_SECONDS[1])
                continue
            backoff = BACKOFF_SECONDS[0]
            if self._down_since is not None:
                await self._up()
                continue  # publish again what was taken just before the outage
            if not delivered:
                await self._wait(self._poll)

    async def _sleep(self, seconds: float) -> None:
        """A backoff: only what is committed from now on cuts it short."""
        self._wake.clear()
        await self._wait(seconds)

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _round(self) -> int:
        """One pass over every table; how many messages were published."""
        delivered = 0
        # Kept messages are dropped only while the fabric is up: after an outage the relay first
        # publishes again what it took just before (see KEEP_SECONDS).
        purge = self._down_since is None
        for table in list(self._tables.values()):
            if purge:
                await asyncio.to_thread(table.purge, time.time() - KEEP_SECONDS)
            while not self._stopping:
                claimed = await asyncio.to_thread(table.claim, BATCH, LEASE_SECONDS)
                if not claimed:
                    break
                delivered += await self._publish(table, claimed)
        return delivered

    async def _publish(self, table: _Table, claimed: list[tuple[int, OutgoingMessage]]) -> int:
        done: list[int] = []
        index = 0
        try:
            for index, (seq, message) in enumerate(claimed):
                ttl = message.ttl
                if ttl is not None:
                    ttl -= time.time() - message.created
                    if ttl <= 0:  # as the fabric would: not delivered within its TTL
                        log.info("outbox message %s to %s expired before the fabric took it", message.msg_id, message.topic)
                        done.append(seq)
                        continue
                try:
                    await self._fabric.publish(
                        message.topic, message.data, headers=message.headers, msg_id=message.msg_id,
                        ttl=ttl, priority=message.priority,
                    )  # fmt: skip
                except _TRANSIENT:
                    await asyncio.to_thread(table.release, [s for s, _ in claimed[index:]])
                    raise
                except ModrpcError as exc:
                    log.error(
                        "the fabric refused outbox message %s to %s for good (%s); it stays in %s, marked",
                        message.msg_id, message.topic, exc, table.path,
                    )  # fmt: skip
                    await asyncio.to_thread(table.fail, seq, str(exc))
                    if table is self._local:
                        self._pending = max(0, self._pending - 1)
                    continue
                done.append(seq)
        except asyncio.CancelledError:
            # Stopped mid-way: what was not published goes back at once, not after its lease.
            table.release([s for s, _ in claimed[index:]])
            raise
        finally:
            if done:
                await asyncio.to_thread(table.done, done)
                self.published += len(done)
                if table is self._local:
                    self._pending = max(0, self._pending - len(done))
                if self._down_since is not None:
                    self._held_back += len(done)
        return len(done)

    async def _down(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._down_at = time.time()
            self._held_back = 0
        if now - self._reported >= REPORT_SECONDS or self._reported < self._down_since:
            self._reported = now
            waiting = {path: await asyncio.to_thread(table.pending) for path, table in list(self._tables.items())}
            where = ", ".join(f"{count} in {path}" for path, count in waiting.items() if count) or "none"
            log.warning(
                "the fabric cannot take events (%s); they wait in the outbox (%s) and are published "
                "when it can", exc, where,
            )  # fmt: skip

    async def _up(self) -> None:
        again = 0
        for table in list(self._tables.values()):
            count = await asyncio.to_thread(table.again, self._down_at - KEEP_SECONDS, self._down_at)
            again += count
            if table is self._local:
                self._pending += count
        log.warning(
            "the fabric takes events again after %.1fs; %d outbox messages published, and %d it had "
            "acknowledged just before the outage published again (duplicates are dropped by message id)",
            time.monotonic() - self._down_since if self._down_since is not None else 0.0, self._held_back, again,
        )  # fmt: skip
        self._down_since = None

    async def stop(self, grace: float = 5.0) -> None:
        """Publish what is left for up to ``grace`` seconds, then stop; what remains stays on disk
        (and is said so in the log) for the next start of any worker of the module."""
        task, self._task = self._task, None
        if task is not None:
            if self._pending and grace > 0:
                give_up = time.monotonic() + grace
                while self._pending and self._down_since is None and time.monotonic() < give_up:
                    self.wake()
                    await asyncio.sleep(0.05)
            self._stopping = True
            self.wake()
            try:
                async with asyncio.timeout(max(grace, 0.1)):
                    await task
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pending:
            log.warning("%d events wait in the outbox %s for the next worker of the module", self._pending, self._local_path)
        for table in self._tables.values():
            with contextlib.suppress(sqlite3.Error):
                table.close()
        self._tables.clear()

