"""The manifest store: module versions, labels, worker registrations and append-only logs.

One interface (:class:`ManifestStore`), split by role so a component names what it touches
(:class:`VersionStore` manifests, :class:`WorkerRegistry` registrations, :class:`LogStore`
append-only streams of audit records and snapshots, :class:`WatchableStore` the change feed),
with two backends chosen by URL, SQLite (the embedded default, :data:`DEFAULT_URL`) and
PostgreSQL (shared by many hosts)::

    async with open_store("sqlite:///.modrpc/store.db") as store:
        await store.put_version("users", record)
        async with store.watch() as events:
            async for event in events:
                ...

Gateways watch the store to see new versions, moved labels and workers without restarting.
"""

from runtime.store._open import open_store
from runtime.store._protocol import (
    LogStore,
    ManifestStore,
    VersionStore,
    WatchableStore,
    WorkerRegistry,
)
from runtime.store._records import StoreEvent, VersionRecord, WorkerRecord
from runtime.store._watch import Watch

__all__ = [
    "LogStore",
    "ManifestStore",
    "StoreEvent",
    "VersionRecord",
    "VersionStore",
    "Watch",
    "WatchableStore",
    "WorkerRecord",
    "WorkerRegistry",
    "open_store",
]
