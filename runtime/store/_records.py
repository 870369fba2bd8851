"""What the store keeps: module versions, worker registrations, and the events a watch yields.

Records are frozen and checked when built, so a record that exists can be stored and comes back
equal (Property 39). ``to_json``/``from_json`` give a plain-JSON form for logs, the CLI and tests;
the backends keep the same fields in columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from runtime.errors import InvalidArgument
from runtime.store._json import check_document, check_name

__all__ = ["EventKind", "StoreEvent", "VersionRecord", "WorkerRecord"]

EventKind: TypeAlias = Literal["version", "label", "worker"]
EVENT_KINDS: frozenset[str] = frozenset(("version", "label", "worker"))


def _seconds(value: object, what: str) -> float:
    # bool is an int; a flag where a time belongs is a caller bug worth naming.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{what} must be unix seconds (a number), got {value!r}")
    # ``+ 0.0`` turns -0.0 into 0.0: SQLite stores whole REALs as integers and loses the sign.
    seconds = float(value) + 0.0
    if not math.isfinite(seconds):
        raise InvalidArgument(f"{what} must be finite, got {value!r}")
    return seconds


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{what} must be a bool, got {value!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionRecord:
    """One version of one module: its schema, manifests, place in the version graph and metadata.

    The JSON fields are plain documents (dicts of JSON values) and are given back equal; arrays
    come back as lists. Treat them as read-only: the record is frozen, its dicts are not.

        >>> VersionRecord(id="2025-06-01", created_at=1748736000, schema={}, fingerprint="sha256:0",
        ...               manifest={}, labels=("stable", "latest")).labels
        ('latest', 'stable')
    """

    id: str
    """The version id: a date (``2025-06-01``) or ``tsv:<unix-seconds>-<module>-<seq>``."""
    created_at: float
    """When the version was recorded, in unix seconds; versions are listed in this order."""
    schema: dict[str, Any]
    """The module's GType schema at this version (``Schema.to_json()``)."""
    fingerprint: str
    """The schema's fingerprint (``sha256:<hex>``)."""
    manifest: dict[str, Any]
    """The generated handler manifests of this version."""
    labels: tuple[str, ...] = ()
    """Labels (``stable``, ``latest``, ``v1.2.0``) pointing at this version; sorted, no repeats."""
    breaking: bool = False
    """Whether the change from ``parent`` is breaking."""
    parent: str | None = None
    """The version this one was derived from: the edge of the version graph."""
    transformers: dict[str, str] = field(default_factory=dict)
    """Transformer sources by step name (``forward``, ``backward``, ...)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free metadata: lifecycle state (hot/warm/cold), keep/retire overrides, and so on."""

    def __post_init__(self) -> None:
        check_name(self.id, "version id")
        object.__setattr__(self, "created_at", _seconds(self.created_at, "created_at"))
        check_document(self.schema, "schema")
        if not isinstance(self.fingerprint, str):
            raise InvalidArgument(f"fingerprint must be a string, got {self.fingerprint!r}")
        check_document(self.manifest, "manifest")
        if isinstance(self.labels, str):
            raise InvalidArgument(f"labels must be a collection of strings, got {self.labels!r}")
        labels = tuple(sorted({check_name(label, "label") for label in self.labels}))
        object.__setattr__(self, "labels", labels)
        _flag(self.breaking, "breaking")
        if self.parent is not None:
            check_name(self.parent, "parent version id")
        check_document(self.transformers, "transformers")
        for step, source in self.transformers.items():
            if not isinstance(source, str):
                raise InvalidArgument(f"transformers[{step!r}] must be source text, got {source!r}")
        check_document(self.metadata, "metadata")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "schema": self.schema,
            "fingerprint": self.fingerprint,
            "manifest": self.manifest,
            "labels": list(self.labels),
            "breaking": self.breaking,
            "parent": self.parent,
            "transformers": self.transformers,
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionRecord:
        return cls(
            id=data["id"],
            created_at=data["created_at"],
            schema=data["schema"],
            fingerprint=data["fingerprint"],
            manifest=data["manifest"],
            labels=tuple(data.get("labels", ())),
            breaking=data.get("breaking", False),
            parent=data.get("parent"),
            transformers=data.get("transformers", {}),
            metadata=data.get("metadata", {}),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRecord:
    """A running worker as registered in the store; the gateway routes only to healthy ones.

    >>> WorkerRecord(id="users-1", module="users", address="127.0.0.1:50061",
    ...              versions=("2025-06-01",), pid=4242, started_at=1.0, last_seen=1.0).healthy
    True
    """

    id: str
    """Unique per worker process (a restarted worker may reuse its id to replace its record)."""
    module: str
    """The module this worker serves."""
    address: str
    """Where it listens, ``host:port``."""
    versions: tuple[str, ...] = ()
    """The version ids it serves, in the worker's order."""
    healthy: bool = True
    """The last health it reported; the gateway sends traffic only to healthy workers."""
    pid: int
    """Its operating-system process id."""
    started_at: float
    """When it started, in unix seconds."""
    last_seen: float
    """Its last heartbeat, in unix seconds (the store's clock when heartbeats come in)."""

    def __post_init__(self) -> None:
        check_name(self.id, "worker id")
        check_name(self.module, "module")
        check_name(self.address, "worker address")
        if isinstance(self.versions, str):
            raise InvalidArgument(f"versions must be a collection of ids, got {self.versions!r}")
        versions = tuple(check_name(v, "version id") for v in self.versions)
        object.__setattr__(self, "versions", versions)
        _flag(self.healthy, "healthy")
        if isinstance(self.pid, bool) or not isinstance(self.pid, int) or not 0 <= self.pid < 2**31:
            raise InvalidArgument(f"pid must be a process id (0 to 2**31-1), got {self.pid!r}")
        object.__setattr__(self, "started_at", _seconds(self.started_at, "started_at"))
        object.__setattr__(self, "last_seen", _seconds(self.last_seen, "last_seen"))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "module": self.module,
            "address": self.address,
            "versions": list(self.versions),
            "healthy": self.healthy,
            "pid": self.pid,
            "started_at": self.started_at,
            "last_seen": self.last_seen,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerRecord:
        return cls(
            id=data["id"],
            module=data["module"],
            address=data["address"],
            versions=tuple(data.get("versions", ())),
            healthy=data.get("healthy", True),
            pid=data["pid"],
            started_at=data["started_at"],
            last_seen=data["last_seen"],
        )


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """Something changed: a version was stored, a label moved, or a worker came, went or changed.

    ``key`` is the version id, the label or the worker id. Events say what to re-read, not the new
    value, so a watcher reads the store after an event and never acts on stale data.
    """

    kind: EventKind
    module: str
    key: str

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise InvalidArgument(
                f"event kind must be one of {sorted(EVENT_KINDS)}, got {self.kind!r}"
            )

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "module": self.module, "key": self.key}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoreEvent:
        return cls(kind=data["kind"], module=data["module"], key=data["key"])
