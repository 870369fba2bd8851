"""A module's recorded versions: ``modules/<name>/versions/<id>.json``, one file per version.

Each record keeps the version's whole GType schema, so any past version can be served,
transformed to and regenerated long after the handler code has moved on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from runtime.gtype import Schema
from runtime.versions._resolve import version_instant
from runtime.wire import FieldLock, build_file

__all__ = ["RecordedVersion", "VersionHistory", "build_version_files"]


@dataclass(frozen=True)
class RecordedVersion:
    """One recorded version of a module."""

    id: str
    created_at: float
    schema: Schema
    fingerprint: str
    parent: str | None = None
    breaking: bool = False
    changes: tuple[dict[str, Any], ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "parent": self.parent,
            "breaking": self.breaking,
            "fingerprint": self.fingerprint,
            "changes": list(self.changes),
            "schema": self.schema.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordedVersion:
        return cls(
            id=data["id"],
            created_at=float(data["created_at"]),
            schema=Schema.from_json(data["schema"]),
            fingerprint=data["fingerprint"],
            parent=data.get("parent"),
            breaking=bool(data.get("breaking", False)),
            changes=tuple(data.get("changes", ())),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@dataclass
class VersionHistory:
    """The versions of one module, oldest first."""

    module: str
    records: list[RecordedVersion]

    @classmethod
    def load(cls, module: str, directory: Path) -> VersionHistory:
        records = []
        if directory.is_dir():
            for path in sorted(directory.glob("*.json")):
                try:
                    records.append(RecordedVersion.from_json(json.loads(path.read_text("utf-8"))))
                except (ValueError, KeyError) as exc:
                    raise ValueError(f"{path}: not a valid version record ({exc})") from exc
        records.sort(key=lambda r: (r.created_at, r.id))
        return cls(module, records)

    @property
    def latest(self) -> RecordedVersion | None:
        return self.records[-1] if self.records else None

    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    def get(self, version_id: str) -> RecordedVersion:
        for r in self.records:
            if r.id == version_id:
                return r
        raise KeyError(f"module {self.module!r} has no version {version_id!r}")

    def next_id(self, date: str, now: float) -> str:
        """``date`` when it is free and after the latest version; otherwise a tsv id."""
        latest = self.latest
        if date not in self.ids() and (latest is None or version_instant(date) > latest.created_at):
            return date
        seq = len(self.records) + 1
        return f"tsv:{int(now)}-{self.module}-{seq}"

    @staticmethod
    def file_name(version_id: str) -> str:
        return version_id.replace(":", "_") + ".json"


def build_version_files(
    history: VersionHistory, lock: FieldLock
) -> list[tuple[RecordedVersion, descriptor_pb2.FileDescriptorProto]]:
    """The descriptor of every recorded version, oldest first (assigning numbers in ``lock``)."""
    built: list[tuple[RecordedVersion, descriptor_pb2.FileDescriptorProto]] = []
    for record in history.records:
        fdp = build_file(record.schema, lock, previous=[f for _, f in built])
        built.append((record, fdp))
    return built
