"""The manifest store's contract: what the gateway, workers and Timescape may ask of it.

Two backends implement it, SQLite (the embedded default) and PostgreSQL (shared by many hosts),
and one contract test suite runs against both. Every write is one transaction: it happens
entirely or not at all, and watchers hear of it only once it is committed.

Failures come out as runtime errors: ``InvalidArgument`` for a bad record, ``NotFound`` for an
unknown version or worker, ``Unavailable`` when the database cannot be reached (retrying later
may work), ``InternalError`` when the database reports anything else.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol

from runtime.store._records import VersionRecord, WorkerRecord
from runtime.store._watch import Watch

__all__ = ["LogStore", "ManifestStore", "VersionStore", "WatchableStore", "WorkerRegistry"]


class VersionStore(Protocol):
    """The manifests: module versions and their labels. What Timescape and the gateway read."""

    async def put_version(self, module: str, record: VersionRecord) -> None:
        """Store ``record``, replacing any earlier record with the same id.

        Its ``labels`` become exactly the labels pointing at it: each one moves here from
        whichever version had it, and labels that pointed here but are not listed are removed.
        A replaced record keeps its place among versions created at the same instant.
        """
        ...

    async def get_version(self, module: str, version_id: str) -> VersionRecord:
        """The record of one version, with the labels pointing at it now; NotFound if unknown."""
        ...

    async def list_versions(self, module: str) -> list[VersionRecord]:
        """Every version of ``module``, oldest ``created_at`` first (ties: first stored first)."""
        ...

    async def set_label(self, module: str, label: str, version_id: str) -> None:
        """Point ``label`` at ``version_id``, moving it if set; NotFound for an unknown version."""
        ...

    async def labels(self, module: str) -> dict[str, str]:
        """Every label of ``module`` and the version id it points at."""
        ...

    async def modules(self) -> list[str]:
        """The names of the modules that have at least one version, sorted."""
        ...



class WorkerRegistry(Protocol):
    """Registrations: which workers run where, healthy or not, and when they were last seen."""

    async def register_worker(self, worker: WorkerRecord) -> None:
        """Record a running worker, replacing any record with the same id."""
        ...

    async def deregister_worker(self, worker_id: str) -> None:
        """Forget a worker; forgetting one that is not registered does nothing."""
        ...

    async def set_worker_health(self, worker_id: str, healthy: bool) -> None:
        """Record a worker's health; NotFound if it is not registered."""
        ...

    async def heartbeat(self, worker_id: str) -> None:
        """Set the worker's ``last_seen`` to the store's clock now; NotFound if not registered.

        A heartbeat is not an event: gateways judge staleness from ``last_seen`` when they read,
        so frequent heartbeats do not wake every watcher.
        """
        ...

    async def list_workers(self, module: str | None = None) -> list[WorkerRecord]:
        """Registered workers, of one module or all, sorted by module then id."""
        ...



class LogStore(Protocol):
    """Append-only streams of JSON documents: audit records and stored snapshots live here."""

    async def append(self, stream: str, record: dict[str, Any]) -> int:
        """Append a JSON document to ``stream``; returns its id, greater than every earlier one."""
        ...

    async def read(
        self, stream: str, after: int = 0, limit: int = 100
    ) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` entries of ``stream`` with ids above ``after``, in id order."""
        ...

    async def prune(
        self, stream: str, *, before: float | None = None, max_bytes: int | None = None
    ) -> int:
        """Remove the entries of ``stream`` appended before ``before`` (unix seconds), then the
        oldest until the rest take at most ``max_bytes``; returns how many went. Retention:
        the only way anything leaves a log."""
        ...



class WatchableStore(Protocol):
    """The change feed: what a gateway or worker directory reacts to."""

    def watch(self) -> Watch:
        """Events for versions, labels and workers changed after the watch subscribes.

        Writes by any process on the same database are seen. See :class:`Watch`.
        """
        ...


class ManifestStore(VersionStore, WorkerRegistry, LogStore, WatchableStore, Protocol):
    """The whole store: every role above, and a lifecycle. A component that needs only one role
    takes that role's type, so what it may touch is visible in its signature.

    Build one with :func:`open_store`; use it inside ``async with`` so it is always closed::

        async with open_store("sqlite:///.modrpc/store.db") as store:
            await store.put_version("users", record)
            await store.set_label("users", "stable", record.id)
    """

    @property
    def url(self) -> str:
        """The store's URL with any password masked: safe for logs and error messages."""
        ...

    async def start(self) -> None:
        """Connect and bring the schema up to date; Unavailable if the database is unreachable."""
        ...

    async def close(self) -> None:
        """Close connections and end every watch; safe to call twice."""
        ...

    async def __aenter__(self) -> ManifestStore: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
