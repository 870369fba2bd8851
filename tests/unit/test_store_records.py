"""Store records, URLs and migrations: the parts of the manifest store that need no database."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from runtime.config import mask_url
from runtime.errors import FailedPrecondition, InternalError, InvalidArgument, NotFound, Unavailable
from runtime.gtype import Field, GType, Method, Schema
from runtime.store import StoreEvent, VersionRecord, WorkerRecord, open_store
from runtime.store._errors import store_errors, translate
from runtime.store._migrations import MIGRATIONS, pending
from runtime.store._url import DEFAULT_URL, postgres_target, sqlite_path


def version(**overrides: Any) -> VersionRecord:
    fields: dict[str, Any] = {
        "id": "2025-06-01",
        "created_at": 1_748_736_000.5,
        "schema": {},
        "fingerprint": "sha256:0",
        "manifest": {},
    }
    return VersionRecord(**{**fields, **overrides})


def worker(**overrides: Any) -> WorkerRecord:
    fields: dict[str, Any] = {
        "id": "users-1",
        "module": "users",
        "address": "127.0.0.1:50061",
        "versions": ("2025-06-01",),
        "pid": 4242,
        "started_at": 10.0,
        "last_seen": 11.0,
    }
    return WorkerRecord(**{**fields, **overrides})



def test_a_version_record_round_trips_through_json_with_a_real_schema() -> None:
    user = GType.object("User", (Field("name", GType.primitive("str")),))
    schema = Schema(
        "users", types=(user,), methods=(Method("Get", GType.ref("User"), GType.ref("User")),)
    )
    record = version(
        schema=schema.to_json(),
        fingerprint=schema.fingerprint(),
        labels=("stable",),
        breaking=True,
        parent="2025-01-15",
        transformers={"forward": "def forward(req): return req"},
        metadata={"state": "cold", "keep": False},
    )
    again = VersionRecord.from_json(record.to_json())
    assert again == record
    assert Schema.from_json(again.schema).fingerprint() == record.fingerprint


def test_version_labels_are_kept_sorted_without_repeats() -> None:
    assert version(labels=["stable", "latest", "stable"]).labels == ("latest", "stable")


def test_created_at_is_kept_as_float_seconds_and_negative_zero_as_zero() -> None:
    assert version(created_at=5).created_at == 5.0
    assert isinstance(version(created_at=5).created_at, float)
    assert str(version(created_at=-0.0).created_at) == "0.0"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"id": ""}, "version id"),
        ({"id": "a\x00b"}, "NUL"),
        ({"created_at": float("nan")}, "created_at"),
        ({"created_at": True}, "created_at"),
        ({"labels": "stable"}, "labels"),
        ({"labels": ("",)}, "label"),
        ({"breaking": "yes"}, "breaking"),
        ({"parent": ""}, "parent"),
        ({"transformers": {"forward": 3}}, "transformers"),
        ({"metadata": {1: "one"}}, "key 1"),
        ({"metadata": {"when": {1.5, 2.5}}}, "metadata['when']"),
        ({"metadata": {"ratio": [1.0, float("inf")]}}, "metadata['ratio'][1]"),
        ({"schema": []}, "schema"),
        ({"manifest": {"name": "\ud800"}}, "manifest"),
    ],
)
def test_a_version_record_that_would_not_come_back_identical_is_refused(
    overrides: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidArgument, match=named.replace("[", r"\[").replace("]", r"\]")):
        version(**overrides)


def test_a_worker_record_round_trips_through_json() -> None:
    record = worker(healthy=False, versions=["2025-01-15", "2025-06-01"])
    assert record.versions == ("2025-01-15", "2025-06-01")
    assert WorkerRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"id": ""}, "worker id"),
        ({"module": ""}, "module"),
        ({"address": ""}, "address"),
        ({"pid": -1}, "pid"),
        ({"pid": True}, "pid"),
        ({"pid": 2**40}, "pid"),
        ({"healthy": 1}, "healthy"),
        ({"versions": "2025-06-01"}, "versions"),
        ({"last_seen": float("inf")}, "last_seen"),
    ],
)
def test_a_bad_worker_record_is_refused(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidArgument, match=named):
        worker(**overrides)


def test_store_events_round_trip_and_refuse_unknown_kinds() -> None:
    event = StoreEvent("label", "users", "stable")
    assert StoreEvent.from_json(event.to_json()) == event
    with pytest.raises(InvalidArgument, match="kind"):
        StoreEvent("module", "users", "x")  # type: ignore[arg-type]


def test_sqlite_urls_are_relative_with_three_slashes_and_absolute_with_four() -> None:
    assert str(sqlite_path(DEFAULT_URL)) == ".modrpc/store.db"
    assert str(sqlite_path("sqlite:////var/lib/modrpc/store.db")) == "/var/lib/modrpc/store.db"
    with pytest.raises(InvalidArgument, match="in-memory"):
        sqlite_path("sqlite:///:memory:")
    with pytest.raises(InvalidArgument, match="names no database file"):
        sqlite_path("sqlite:///")


def test_the_schema_option_is_taken_off_the_postgresql_url() -> None:
    target = postgres_target("postgresql://u:p@db:5432/test?schema=tenant_a&sslmode=disable")
    assert (target.dsn, target.schema) == (
        "postgresql://u:p@db:5432/test?sslmode=disable",
        "tenant_a",
    )
    assert postgres_target("postgresql://db/test").schema == "public"
    with pytest.raises(InvalidArgument, match="schema"):
        postgres_target("postgresql://u:p@db/test?schema=drop;table")
    with pytest.raises(InvalidArgument, match=r"postgresql://u:\*\*\*@db:http/test.*[Pp]ort"):
        postgres_target("postgresql://u:p@db:http/test")
    with pytest.raises(InvalidArgument, match=r"u:\*\*\*@db"):
        postgres_target("postgresql://u:p@db/test?schema=" + "x" * 51)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://modrpc:s3cret@db:5432/test", "postgresql://modrpc:***@db:5432/test"),
        (
            "postgresql://modrpc@db/test?password=s3cret&x=1",
            "postgresql://modrpc@db/test?password=***&x=1",
        ),
        ("postgresql://modrpc:p%40ss@db/test", "postgresql://modrpc:***@db/test"),
        ("sqlite:////abs/store.db", "sqlite:////abs/store.db"),
        (DEFAULT_URL, DEFAULT_URL),
    ],
)
def test_urls_are_shown_with_the_password_masked_and_otherwise_unchanged(
    url: str, masked: str
) -> None:
    assert mask_url(url) == masked


def test_open_store_picks_the_backend_by_scheme_without_connecting() -> None:
    assert open_store(DEFAULT_URL).url == DEFAULT_URL
    assert open_store("postgres://u:pw@127.0.0.1:1/test").url == "postgres://u:***@127.0.0.1:1/test"
    with pytest.raises(InvalidArgument, match=r"redis://:\*\*\*@cache:6379"):
        open_store("redis://:pw@cache:6379")


def test_migrations_are_numbered_from_one_without_gaps_for_both_backends() -> None:
    assert [m.number for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert all(m.sqlite and m.postgres for m in MIGRATIONS)
    assert pending(0, "x") == MIGRATIONS
    assert pending(MIGRATIONS[-1].number, "x") == ()


def test_a_database_newer_than_the_migrations_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="upgrade the runtime"):
        pending(MIGRATIONS[-1].number + 1, "sqlite:///store.db")


def test_a_locked_sqlite_database_is_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "locked.db")
    holder = sqlite3.connect(path, isolation_level=None)
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(Unavailable, match="store-url is unavailable: database is locked"):
            with store_errors("store-url"):
                waiter.execute("BEGIN IMMEDIATE")
    finally:
        holder.close()
        waiter.close()


def test_using_a_closed_sqlite_connection_is_an_internal_error() -> None:
    conn = sqlite3.connect(":memory:")
    conn.close()
    with pytest.raises(InternalError, match="ProgrammingError") as caught:
        with store_errors("store-url"):
            conn.execute("SELECT 1")
    assert isinstance(caught.value.__cause__, sqlite3.ProgrammingError)


@pytest.mark.parametrize(
    ("exc", "connecting", "expected"),
    [
        (ConnectionRefusedError(111, "Connection refused"), False, Unavailable),
        (TimeoutError(), False, Unavailable),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), False, Unavailable),
        (asyncpg.AdminShutdownError("terminating connection"), False, Unavailable),
        (asyncpg.CheckViolationError("violates check constraint"), False, InternalError),
        (asyncpg.UndefinedTableError('relation "labels" does not exist'), False, InternalError),
        (asyncpg.InvalidPasswordError("password authentication failed"), True, Unavailable),
        (NotFound("no such version"), False, NotFound),
    ],
)
def test_database_errors_become_runtime_errors(
    exc: Exception, connecting: bool, expected: type[Exception]
) -> None:
    translated = translate(exc, "postgresql://u:***@db/test", connecting=connecting)
    assert type(translated) is expected
    if translated is not exc:
        assert "postgresql://u:***@db/test" in str(translated)
