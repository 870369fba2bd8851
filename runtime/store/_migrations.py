"""The store's database schema, as a numbered list of migrations for both backends.

A store applies the migrations it has not yet applied when it starts, inside one transaction
that also records them in ``schema_version``, so a start that fails leaves the database as it
was and a second start does nothing. Concurrent starts are serialised: on SQLite by the write
lock ``BEGIN IMMEDIATE`` takes, on PostgreSQL by an advisory lock held for the transaction.

To change the schema, append a migration with the next number; never edit one that has shipped.

JSON documents are ``json`` in PostgreSQL, not ``jsonb``: jsonb rewrites numbers (``1e20``
comes back as an integer, ``-0.0`` as ``0.0``) and refuses ``\\u0000``, which would change a
schema's canonical JSON and so its fingerprint. Nothing queries inside these documents, so
jsonb's indexing would buy nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import FailedPrecondition

__all__ = ["MIGRATIONS", "SCHEMA_VERSION_TABLE", "Migration", "pending"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: the same change written for each backend."""

    number: int
    summary: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


SCHEMA_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY,"
    " summary TEXT NOT NULL,"
    " applied_at DOUBLE PRECISION NOT NULL)"
)
"""Written so that both SQLite and PostgreSQL accept it."""

_INITIAL = Migration(
    number=1,
    summary="versions, labels, workers, the append-only log and the change feed",
    sqlite=(
        """CREATE TABLE versions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            module TEXT NOT NULL CHECK (module <> ''),
            version_id TEXT NOT NULL CHECK (version_id <> ''),
            created_at REAL NOT NULL,
            schema_json TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            manifest TEXT NOT NULL,
            breaking INTEGER NOT NULL CHECK (breaking IN (0, 1)),
            parent TEXT,
            transformers TEXT NOT NULL,
            metadata TEXT NOT NULL,
            UNIQUE (module, version_id))""",
        """CREATE TABLE labels (
            module TEXT NOT NULL,
            label TEXT NOT NULL CHECK (label <> ''),
            version_id TEXT NOT NULL,
            PRIMARY KEY (module, label),
            FOREIGN KEY (module, version_id) REFERENCES versions (module, version_id))""",
        "CREATE INDEX labels_by_version ON labels (module, version_id)",
        """CREATE TABLE workers (
            id TEXT PRIMARY KEY CHECK (id <> ''),
            module TEXT NOT NULL CHECK (module <> ''),
            address TEXT NOT NULL,
            versions TEXT NOT NULL,
            healthy INTEGER NOT NULL CHECK (healthy IN (0, 1)),
            pid INTEGER NOT NULL,
            started_at REAL NOT NULL,
            last_seen REAL NOT NULL)""",
        "CREATE INDEX workers_by_module ON workers (module, id)",
        """CREATE TABLE log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            stream TEXT NOT NULL,
            record TEXT NOT NULL)""",
        "CREATE INDEX log_by_stream ON log (stream, id)",
        # SQLite has no LISTEN/NOTIFY: writers append here in the same transaction and watchers
        # read what is new when PRAGMA data_version says another connection committed.
        """CREATE TABLE changes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            module TEXT NOT NULL,
            key TEXT NOT NULL)""",
    ),
    postgres=(
        """CREATE TABLE versions (
            seq BIGSERIAL NOT NULL UNIQUE,
            module TEXT NOT NULL CHECK (module <> ''),
            version_id TEXT NOT NULL CHECK (version_id <> ''),
            created_at DOUBLE PRECISION NOT NULL,
            schema_json JSON NOT NULL,
            fingerprint TEXT NOT NULL,
            manifest JSON NOT NULL,
            breaking BOOLEAN NOT NULL,
            parent TEXT,
            transformers JSON NOT NULL,
            metadata JSON NOT NULL,
            PRIMARY KEY (module, version_id))""",
        """CREATE TABLE labels (
            module TEXT NOT NULL,
            label TEXT NOT NULL CHECK (label <> ''),
            version_id TEXT NOT NULL,
            PRIMARY KEY (module, label),
            FOREIGN KEY (module, version_id) REFERENCES versions (module, version_id))""",
        "CREATE INDEX labels_by_version ON labels (module, version_id)",
        """CREATE TABLE workers (
            id TEXT PRIMARY KEY CHECK (id <> ''),
            module TEXT NOT NULL CHECK (module <> ''),
            address TEXT NOT NULL,
            versions JSON NOT NULL,
            healthy BOOLEAN NOT NULL,
            pid INTEGER NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            last_seen DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX workers_by_module ON workers (module, id)",
        """CREATE TABLE log (
            id BIGSERIAL PRIMARY KEY,
            stream TEXT NOT NULL,
            record JSON NOT NULL)""",
        "CREATE INDEX log_by_stream ON log (stream, id)",
    ),
)

_LOG_RETENTION = Migration(
    number=2,
    summary="log entries carry when they were appended and their size, for retention",
    sqlite=(
        "ALTER TABLE log ADD COLUMN created_at REAL NOT NULL DEFAULT 0",
        "ALTER TABLE log ADD COLUMN size INTEGER NOT NULL DEFAULT 0",
        # Entries from before: their age is unknown, so it counts from now.
        "UPDATE log SET size = length(CAST(record AS BLOB)),"
        " created_at = CAST(strftime('%s', 'now') AS REAL)",
    ),
    postgres=(
        "ALTER TABLE log ADD COLUMN created_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
        " ADD COLUMN size BIGINT NOT NULL DEFAULT 0",
        "UPDATE log SET size = octet_length(record::text), created_at = EXTRACT(EPOCH FROM now())",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (_INITIAL, _LOG_RETENTION)
"""Every migration, numbered 1, 2, 3, ... in the order they apply."""


def pending(current: int, url: str) -> tuple[Migration, ...]:
    """The migrations a database at schema version ``current`` still needs.

    A database newer than this code is refused rather than used: its tables may mean something
    this code does not know.
    """
    latest = MIGRATIONS[-1].number
    if current > latest:
        raise FailedPrecondition(
            f"manifest store {url} has schema version {current}, newer than this runtime's "
            f"{latest}; upgrade the runtime"
        )
    return tuple(m for m in MIGRATIONS if m.number > current)
