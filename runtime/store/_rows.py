"""Records to table rows and back, the same for both backends.

The backends differ in placeholders and drivers, not in columns, so the column lists and the
conversions live here once. JSON documents travel as text (``TEXT`` in SQLite, ``json`` in
PostgreSQL); SQLite hands booleans back as 0/1, which ``bool()`` undoes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from runtime.store._json import decode, encode
from runtime.store._records import StoreEvent, VersionRecord, WorkerRecord

__all__ = [
    "VERSION_COLUMNS",
    "WORKER_COLUMNS",
    "Row",
    "label_events",
    "labels_by_version",
    "version_from_row",
    "version_params",
    "worker_from_row",
    "worker_params",
]


class Row(Protocol):
    """A result row: a sqlite3 tuple or an asyncpg Record, both indexed by column position."""

    def __getitem__(self, index: int, /) -> Any: ...


VERSION_COLUMNS = (
    "version_id, created_at, schema_json, fingerprint, manifest, breaking, parent, "
    "transformers, metadata"
)
"""The ``versions`` columns a record fills, in the order of :func:`version_params`."""

WORKER_COLUMNS = "id, module, address, versions, healthy, pid, started_at, last_seen"
"""The ``workers`` columns, in the order of :func:`worker_params`."""


def version_params(record: VersionRecord) -> tuple[object, ...]:
    return (
        record.id,
        record.created_at,
        encode(record.schema),
        record.fingerprint,
        encode(record.manifest),
        record.breaking,
        record.parent,
        encode(record.transformers),
        encode(record.metadata),
    )


def version_from_row(row: Row, labels: Iterable[str]) -> VersionRecord:
    return VersionRecord(
        id=row[0],
        created_at=row[1],
        schema=decode(row[2]),
        fingerprint=row[3],
        manifest=decode(row[4]),
        breaking=bool(row[5]),
        parent=row[6],
        transformers=decode(row[7]),
        metadata=decode(row[8]),
        labels=tuple(labels),
    )


def worker_params(worker: WorkerRecord) -> tuple[object, ...]:
    return (
        worker.id,
        worker.module,
        worker.address,
        encode(list(worker.versions)),
        worker.healthy,
        worker.pid,
        worker.started_at,
        worker.last_seen,
    )


def worker_from_row(row: Row) -> WorkerRecord:
    return WorkerRecord(
        id=row[0],
        module=row[1],
        address=row[2],
        versions=tuple(decode(row[3])),
        healthy=bool(row[4]),
        pid=row[5],
        started_at=row[6],
        last_seen=row[7],
    )


def labels_by_version(rows: Iterable[Row]) -> dict[str, list[str]]:
    """``(label, version_id)`` rows grouped by version id."""
    grouped: dict[str, list[str]] = {}
    for row in rows:
        grouped.setdefault(row[1], []).append(row[0])
    return grouped


def label_events(
    module: str, before: dict[str, str], version_id: str, wanted: tuple[str, ...]
) -> tuple[list[str], list[StoreEvent]]:
    """What putting a version with labels ``wanted`` does to a module's labels ``before``.

    Returns the labels to delete (they pointed at ``version_id`` and are no longer wanted) and
    an event for every label whose target changes.
    """
    dropped = sorted(
        label for label, target in before.items() if target == version_id and label not in wanted
    )
    moved = [label for label in wanted if before.get(label) != version_id]
    events = [StoreEvent("label", module, label) for label in sorted((*dropped, *moved))]
    return dropped, events
