"""A module's recorded versions: ``modules/<name>/versions/<id>.json``, one file per version.

Each record keeps the version's whole GType schema, so any past version can be served,
transformed to and regenerated long after the handler code has moved on.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.gtype import Schema

__all__ = ["VersionHistory", "VersionRecord", "version_instant"]

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TSV_RE = re.compile(r"^tsv:(\d+)-([a-z][a-z0-9_]*)-(\d+)$")


def version_instant(version_id: str) -> float:
    """Unix seconds a version id stands for: midnight UTC of a date, or a tsv id's seconds."""
    if DATE_RE.match(version_id):
        day = _dt.date.fromisoformat(version_id)
        return _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.UTC).timestamp()
    m = TSV_RE.match(version_id)
    if m:
        return float(m.group(1))
    raise ValueError(f"{version_id!r} is not a version id (YYYY-MM-DD or tsv:<unix>-<module>-<seq>)")


@dataclass(frozen=True)
class VersionRecord:
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
    def from_json(cls, data: dict[str, Any]) -> VersionRecord:
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
    records: list[VersionRecord]

    @classmethod
    def load(cls, module: str, directory: Path) -> VersionHistory:
        records = []
        if directory.is_dir():
            for path in sorted(directory.glob("*.json")):
                try:
                    records.append(VersionRecord.from_json(json.loads(path.read_text("utf-8"))))
                except (ValueError, KeyError) as exc:
                    raise ValueError(f"{path}: not a valid version record ({exc})") from exc
        records.sort(key=lambda r: (r.created_at, r.id))
        return cls(module, records)

    @property
    def latest(self) -> VersionRecord | None:
        return self.records[-1] if self.records else None

    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    def get(self, version_id: str) -> VersionRecord:
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
