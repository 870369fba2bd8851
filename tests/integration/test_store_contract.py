"""The manifest store's contract, written once and run against SQLite and PostgreSQL.

Every test takes a ``backend``: a fresh SQLite file, or a fresh PostgreSQL schema that is dropped
afterwards (so concurrent runs never share tables). ``backend.execute`` reaches the database
directly, around the store, to set up failures and look at what was really written.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from runtime.errors import FailedPrecondition, InternalError, InvalidArgument, NotFound, Unavailable
from runtime.store import (
    ManifestStore,
    StoreEvent,
    VersionRecord,
    Watch,
    WorkerRecord,
    open_store,
)
from tests.services import require_postgres

REPO = Path(__file__).resolve().parents[2]
EVENT_WAIT = 10.0


class ManualClock:
    """Unix seconds that move only when the test says so."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    name: str
    url: str
    schema: str = ""
    """The PostgreSQL schema the store uses (empty for SQLite)."""
    base_url: str = ""
    """The PostgreSQL URL without the store's ``schema`` option."""
    path: Path | None = None
    """The SQLite database file."""

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of one query, run on a connection of the test's own beside the store."""
        return await self._run(sql, rows=True)

    async def execute(self, sql: str) -> None:
        """Run one or more statements on a connection of the test's own."""
        await self._run(sql, rows=False)

    async def _run(self, sql: str, *, rows: bool) -> list[tuple[Any, ...]]:
        if self.path is not None:
            path = str(self.path)

            def run() -> list[tuple[Any, ...]]:
                conn = sqlite3.connect(path, isolation_level=None)
                try:
                    if rows:
                        return conn.execute(sql).fetchall()
                    conn.executescript(sql)
                    return []
                finally:
                    conn.close()

            return await asyncio.to_thread(run)
        conn = await asyncpg.connect(self.base_url, server_settings={"search_path": self.schema})
        try:
            if rows:
                return [tuple(row) for row in await conn.fetch(sql)]
            await conn.execute(sql)
            return []
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "state" / "store.db"
        yield Backend("sqlite", f"sqlite:///{path}", path=path)
        return
    base = require_postgres()
    schema = f"modrpc_test_{secrets.token_hex(6)}"
    yield Backend("postgresql", f"{base}?schema={schema}", schema=schema, base_url=base)
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(backend: Backend, clock: ManualClock) -> AsyncIterator[ManifestStore]:
    async with open_store(backend.url, clock=clock) as opened:
        yield opened


def version(version_id: str, created_at: float = 1.0, **fields: Any) -> VersionRecord:
    return VersionRecord(
        id=version_id,
        created_at=created_at,
        schema=fields.pop("schema", {"module": "users", "types": [], "methods": []}),
        fingerprint=fields.pop("fingerprint", f"sha256:{version_id}"),
        manifest=fields.pop(
            "manifest", {"handlers": [{"id": "users.get", "path": "/users.v1/Get"}]}
        ),
        **fields,
    )


def worker(worker_id: str, module: str = "users", **fields: Any) -> WorkerRecord:
    defaults: dict[str, Any] = {
        "address": "127.0.0.1:50061",
        "versions": ("2025-06-01",),
        "pid": 4242,
        "started_at": 100.0,
        "last_seen": 100.0,
    }
    return WorkerRecord(id=worker_id, module=module, **{**defaults, **fields})


async def next_event(events: Watch) -> StoreEvent:
    return await asyncio.wait_for(anext(events), EVENT_WAIT)


# -- versions and labels --------------------------------------------------------------------


async def test_a_stored_version_comes_back_equal(store: ManifestStore) -> None:
    record = version(
        "tsv:1750000000-users-3",
        created_at=1_750_000_000.25,
        labels=("stable", "v1.2.0"),
        breaking=True,
        parent="2025-06-01",
        transformers={"forward": "def forward(req):\n    return req\n", "backward": "pass"},
        metadata={"state": "warm", "keep": True, "limits": [1, 2.5, None, "x"], "big": 1e20},
    )
    await store.put_version("users", record)
    await store.put_version("users", version("2025-06-01"))
    assert await store.get_version("users", record.id) == record


async def test_an_unknown_version_is_not_found(store: ManifestStore) -> None:
    await store.put_version("users", version("2025-06-01"))
    with pytest.raises(NotFound, match="2025-07-01"):
        await store.get_version("users", "2025-07-01")
    with pytest.raises(NotFound, match="orders"):
        await store.get_version("orders", "2025-06-01")


async def test_versions_are_listed_oldest_first_and_ties_in_the_order_stored(
    store: ManifestStore,
) -> None:
    await store.put_version("users", version("c", created_at=30.0))
    await store.put_version("users", version("b", created_at=10.0))
    await store.put_version("users", version("z", created_at=20.0))
    await store.put_version("users", version("a", created_at=20.0))
    await store.put_version("orders", version("o", created_at=5.0))
    assert [v.id for v in await store.list_versions("users")] == ["b", "z", "a", "c"]
    assert await store.list_versions("inventory") == []


async def test_putting_a_version_again_replaces_it_and_keeps_its_place(
    store: ManifestStore,
) -> None:
    await store.put_version("users", version("first", created_at=1.0))
    await store.put_version("users", version("second", created_at=1.0, metadata={"state": "hot"}))
    await store.put_version("users", version("first", created_at=1.0, metadata={"state": "cold"}))
    listed = await store.list_versions("users")
    assert [v.id for v in listed] == ["first", "second"]
    assert listed[0].metadata == {"state": "cold"}


async def test_set_label_moves_a_label_to_another_version(store: ManifestStore) -> None:
    await store.put_version("users", version("v1", labels=("stable", "latest")))
    await store.put_version("users", version("v2", created_at=2.0))
    await store.set_label("users", "latest", "v2")
    assert await store.labels("users") == {"latest": "v2", "stable": "v1"}
    assert (await store.get_version("users", "v1")).labels == ("stable",)
    assert (await store.get_version("users", "v2")).labels == ("latest",)


async def test_a_put_version_owns_exactly_the_labels_it_lists(store: ManifestStore) -> None:
    await store.put_version("users", version("v1", labels=("stable", "v1.0.0")))
    await store.put_version("users", version("v2", created_at=2.0, labels=("stable",)))
    await store.put_version("users", version("v1", labels=()))
    assert await store.labels("users") == {"stable": "v2"}
    assert [v.labels for v in await store.list_versions("users")] == [(), ("stable",)]


async def test_labelling_an_unknown_version_is_not_found_and_changes_nothing(
    store: ManifestStore,
) -> None:
    await store.put_version("users", version("v1", labels=("stable",)))
    with pytest.raises(NotFound, match="v9"):
        await store.set_label("users", "stable", "v9")
    assert await store.labels("users") == {"stable": "v1"}


async def test_modules_are_those_with_versions(store: ManifestStore) -> None:
    assert await store.modules() == []
    await store.put_version("users", version("v1"))
    await store.put_version("orders", version("v1"))
    await store.put_version("users", version("v2"))
    await store.register_worker(worker("inv-1", module="inventory"))
    assert await store.modules() == ["orders", "users"]


async def test_bad_records_are_refused_before_anything_is_written(store: ManifestStore) -> None:
    with pytest.raises(InvalidArgument, match="label"):
        await store.set_label("users", "", "v1")
    with pytest.raises(InvalidArgument, match="module"):
        await store.put_version("", version("v1"))
    with pytest.raises(InvalidArgument, match="record"):
        await store.append("audit", {"when": float("nan")})
    assert await store.modules() == []
    assert await store.read("audit") == []


# -- workers --------------------------------------------------------------------------------


async def test_workers_are_registered_listed_and_filtered_by_module(store: ManifestStore) -> None:
    users_b, users_a = worker("users-b"), worker("users-a", address="127.0.0.1:50062")
    orders = worker(
        "orders-1", module="orders", versions=("2025-01-15", "2025-06-01"), healthy=False
    )
    for record in (users_b, orders, users_a):
        await store.register_worker(record)
    assert await store.list_workers() == [orders, users_a, users_b]
    assert await store.list_workers("users") == [users_a, users_b]
    assert await store.list_workers("inventory") == []


async def test_registering_a_worker_again_replaces_its_record(store: ManifestStore) -> None:
    await store.register_worker(worker("users-1", pid=1))
    restarted = worker("users-1", pid=2, address="127.0.0.1:50099", started_at=200.0)
    await store.register_worker(restarted)
    assert await store.list_workers() == [restarted]


async def test_worker_health_heartbeat_and_deregistration(
    store: ManifestStore, clock: ManualClock
) -> None:
    await store.register_worker(worker("users-1"))
    await store.set_worker_health("users-1", False)
    clock.now = 1_750_000_123.5
    await store.heartbeat("users-1")
    [found] = await store.list_workers("users")
    assert (found.healthy, found.last_seen, found.started_at) == (False, 1_750_000_123.5, 100.0)
    await store.deregister_worker("users-1")
    await store.deregister_worker("users-1")  # gone already: nothing to do
    assert await store.list_workers() == []


async def test_an_unregistered_worker_cannot_report_health_or_heartbeat(
    store: ManifestStore,
) -> None:
    with pytest.raises(NotFound, match="ghost"):
        await store.set_worker_health("ghost", True)
    with pytest.raises(NotFound, match="ghost"):
        await store.heartbeat("ghost")


# -- append-only log ------------------------------------------------------------------------


async def test_appended_records_come_back_in_order_by_stream_and_page(store: ManifestStore) -> None:
    audit = [await store.append("audit", {"request_id": f"r{i}", "n": i}) for i in range(5)]
    snapshot = await store.append("snapshots", {"state": {"k": [1, 2]}})
    assert audit == sorted(audit) and len(set(audit)) == 5
    assert snapshot > audit[-1]
    assert await store.read("audit", limit=2) == [
        (audit[0], {"request_id": "r0", "n": 0}),
        (audit[1], {"request_id": "r1", "n": 1}),
    ]
    rest = await store.read("audit", after=audit[1])
    assert [entry_id for entry_id, _ in rest] == audit[2:]
    assert await store.read("snapshots") == [(snapshot, {"state": {"k": [1, 2]}})]
    with pytest.raises(InvalidArgument, match="limit"):
        await store.read("audit", limit=0)


async def test_prune_removes_entries_older_than_the_cutoff_from_that_stream_only(
    store: ManifestStore, clock: ManualClock
) -> None:
    old = [await store.append("audit", {"n": i}) for i in range(3)]
    other = await store.append("snapshots", {"n": "kept"})
    clock.now += 100
    recent = await store.append("audit", {"n": 3})
    assert await store.prune("audit", before=clock.now - 50) == 3
    assert [entry for entry, _ in await store.read("audit")] == [recent]
    assert [entry for entry, _ in await store.read("snapshots")] == [other]
    assert await store.prune("audit", before=clock.now - 50) == 0
    assert old[-1] < recent


async def test_prune_by_size_keeps_the_newest_entries_that_fit_the_budget(store: ManifestStore) -> None:
    entries = [await store.append("audit", {"pad": "x" * 1000, "n": i}) for i in range(10)]
    assert await store.prune("audit", max_bytes=3500) == 7  # ~1 KB each: the newest 3 fit
    assert [entry for entry, _ in await store.read("audit")] == entries[-3:]
    assert await store.prune("audit", max_bytes=3500) == 0
    assert await store.prune("audit", max_bytes=10) == 3  # not even the newest one fits


# -- persistence and lifecycle --------------------------------------------------------------


async def test_everything_is_still_there_after_reopening(
    backend: Backend, clock: ManualClock
) -> None:
    record = version("v1", labels=("stable",), metadata={"state": "hot"})
    registered = worker("users-1")
    async with open_store(backend.url, clock=clock) as first:
        await first.put_version("users", record)
        await first.register_worker(registered)
        entry = await first.append("audit", {"ok": True})
    async with open_store(backend.url, clock=clock) as second:
        assert await second.list_versions("users") == [record]
        assert await second.labels("users") == {"stable": "v1"}
        assert await second.list_workers() == [registered]
        assert await second.read("audit") == [(entry, {"ok": True})]


async def test_the_sqlite_file_and_its_folder_are_private(backend: Backend) -> None:
    if backend.path is None:
        pytest.skip("PostgreSQL keeps its own files")
    async with open_store(backend.url) as opened:
        await opened.append("audit", {"ok": True})
    for path in backend.path.parent.iterdir():  # store.db, and its -wal / -shm while open
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert backend.path.parent.stat().st_mode & 0o777 == 0o700


async def test_a_store_is_usable_only_between_start_and_close(backend: Backend) -> None:
    store = open_store(backend.url)
    with pytest.raises(FailedPrecondition, match="not started"):
        await store.modules()
    await store.start()
    await store.start()  # already started: nothing to do
    assert await store.modules() == []
    await store.close()
    await store.close()  # safe twice
    with pytest.raises(FailedPrecondition, match="closed"):
        await store.modules()
    with pytest.raises(FailedPrecondition, match="closed"):
        await store.start()


async def test_concurrent_starts_on_a_new_database_migrate_once(backend: Backend) -> None:
    stores = [open_store(backend.url) for _ in range(4)]
    try:
        await asyncio.gather(*(s.start() for s in stores))
        applied = await backend.fetch("SELECT version FROM schema_version ORDER BY version")
        assert [row[0] for row in applied] == list(range(1, len(applied) + 1))
        await stores[0].put_version("users", version("v1"))
        assert [v.id for v in await stores[3].list_versions("users")] == ["v1"]
    finally:
        for s in stores:
            await s.close()


async def test_a_database_from_a_newer_runtime_is_refused(backend: Backend) -> None:
    async with open_store(backend.url):
        pass
    await backend.execute(
        "INSERT INTO schema_version (version, summary, applied_at) VALUES (999, 'future', 0)"
    )
    with pytest.raises(FailedPrecondition, match="schema version 999"):
        async with open_store(backend.url):
            pass


# -- watch ----------------------------------------------------------------------------------


async def test_a_watch_sees_writes_made_through_another_store(
    backend: Backend, store: ManifestStore
) -> None:
    async with store.watch() as events, open_store(backend.url) as other:
        await other.put_version("users", version("v1", labels=("stable",)))
        await other.register_worker(worker("users-1"))
        await other.set_worker_health("users-1", False)
        await other.heartbeat("users-1")  # not an event
        await other.deregister_worker("users-1")
        seen = [await next_event(events) for _ in range(5)]
    assert seen == [
        StoreEvent("version", "users", "v1"),
        StoreEvent("label", "users", "stable"),
        StoreEvent("worker", "users", "users-1"),
        StoreEvent("worker", "users", "users-1"),
        StoreEvent("worker", "users", "users-1"),
    ]


async def test_a_watch_sees_writes_made_by_another_process(
    backend: Backend, store: ManifestStore
) -> None:
    script = (
        "import asyncio, sys\n"
        "from runtime.store import VersionRecord, open_store\n"
        "async def main():\n"
        "    async with open_store(sys.argv[1]) as store:\n"
        "        record = VersionRecord(\n"
        "            id='2025-07-01', created_at=2.0, schema={}, fingerprint='f', manifest={}\n"
        "        )\n"
        "        await store.put_version('orders', record)\n"
        "asyncio.run(main())\n"
    )
    async with store.watch() as events:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, backend.url, cwd=REPO
        )
        assert await asyncio.wait_for(child.wait(), 60) == 0
        assert await next_event(events) == StoreEvent("version", "orders", "2025-07-01")
    assert [v.id for v in await store.list_versions("orders")] == ["2025-07-01"]


async def test_a_watch_reports_only_changes_after_it_subscribed(store: ManifestStore) -> None:
    await store.put_version("users", version("before"))
    async with store.watch() as events:
        await store.set_label("users", "stable", "before")
        await store.set_label("users", "stable", "before")  # no change, no event
        await store.put_version("users", version("after"))
        assert await next_event(events) == StoreEvent("label", "users", "stable")
        assert await next_event(events) == StoreEvent("version", "users", "after")


async def test_closing_the_store_ends_its_watches(backend: Backend) -> None:
    store = open_store(backend.url)
    await store.start()
    events = store.watch()
    waiting = asyncio.create_task(anext(events))
    await asyncio.sleep(0.3)
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, EVENT_WAIT)


async def _watch_connections(backend: Backend) -> int:
    rows = await backend.fetch(
        "SELECT count(*) FROM pg_stat_activity"
        f" WHERE application_name = 'modrpc-store-watch:{backend.schema}'"
    )
    return int(rows[0][0])


async def test_cancelling_a_watch_closes_it_and_releases_its_connection(
    backend: Backend, store: ManifestStore
) -> None:
    """SQLite defers closing a file another connection of the process has locked, so only
    PostgreSQL's side can be counted; on both, the cancelled watch is closed for good."""
    events = store.watch()

    async def consume() -> None:
        async for _ in events:
            pass

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    if backend.name == "postgresql":
        assert await _watch_connections(backend) == 1
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    await store.put_version("users", version("v1"))
    with pytest.raises(StopAsyncIteration):
        await next_event(events)
    if backend.name == "postgresql":
        for _ in range(50):  # the server drops its row shortly after the socket closes
            if await _watch_connections(backend) == 0:
                break
            await asyncio.sleep(0.05)
        assert await _watch_connections(backend) == 0


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # SQLite has no server to lose
async def test_a_watch_whose_connection_is_cut_fails_unavailable(
    backend: Backend, store: ManifestStore
) -> None:
    async with store.watch() as events:
        await backend.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE application_name = 'modrpc-store-watch:{backend.schema}'"
        )
        with pytest.raises(Unavailable, match="lost its connection"):
            await next_event(events)


# -- failures -------------------------------------------------------------------------------


async def test_a_write_that_fails_midway_leaves_nothing_behind(
    backend: Backend, store: ManifestStore
) -> None:
    """A trigger refuses the label ``refused``, after the version row is already written."""
    if backend.name == "sqlite":
        trigger = (
            "CREATE TRIGGER refuse_label BEFORE INSERT ON labels WHEN NEW.label = 'refused'"
            " BEGIN SELECT RAISE(ABORT, 'label refused by trigger'); END"
        )
    else:
        trigger = (
            "CREATE FUNCTION refuse_label() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.label = 'refused' THEN RAISE EXCEPTION 'label refused by trigger'; END IF;"
            " RETURN NEW; END $$;"
            " CREATE TRIGGER refuse_label BEFORE INSERT ON labels"
            " FOR EACH ROW EXECUTE FUNCTION refuse_label()"
        )
    original = version("v1", labels=("stable",), metadata={"state": "hot"})
    await store.put_version("users", original)
    await backend.execute(trigger)
    async with store.watch() as events:
        with pytest.raises(InternalError, match="refused by trigger"):
            await store.put_version(
                "users", version("v2", created_at=2.0, labels=("latest", "refused"))
            )
        with pytest.raises(InternalError, match="refused by trigger"):
            await store.put_version(
                "users", version("v1", labels=("refused",), metadata={"state": "cold"})
            )
        assert await store.list_versions("users") == [original]
        assert await store.labels("users") == {"stable": "v1"}
        await store.register_worker(worker("users-1"))
        # The failed writes announced nothing: the first event is the write that succeeded.
        assert await next_event(events) == StoreEvent("worker", "users", "users-1")


async def test_an_unknown_scheme_is_an_invalid_argument_naming_the_url() -> None:
    with pytest.raises(InvalidArgument, match=r"mysql://root:\*\*\*@db/modrpc") as caught:
        open_store("mysql://root:hunter2@db/modrpc")
    assert "hunter2" not in str(caught.value)


async def test_postgresql_on_a_closed_port_is_unavailable_with_the_password_masked() -> None:
    store = open_store("postgresql://modrpc:s3cret@127.0.0.1:1/test?schema=nowhere")
    with pytest.raises(Unavailable) as caught:
        await store.start()
    message = str(caught.value)
    assert "postgresql://modrpc:***@127.0.0.1:1/test" in message
    assert "s3cret" not in message
    with pytest.raises(FailedPrecondition, match="not started"):
        await store.modules()
    await store.close()


async def test_a_sqlite_file_that_cannot_be_created_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    url = f"sqlite:///{blocker}/store.db"
    with pytest.raises(Unavailable, match=re.escape(url)):
        async with open_store(url):
            pass
