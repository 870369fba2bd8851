"""Timescape: turning an ``x-api-version`` header into one concrete version id.

A module version has an id in one of two forms, each naming an instant:

* a date, as in Stripe: ``2025-06-01`` (midnight UTC of that day);
* the full form ``tsv:<unix-seconds>-<module>-<seq>`` (``seq`` orders versions made in the same
  second).

Labels (``stable``, ``v1.2.0``...) are aliases for an id; ``latest`` is always available and means
the newest version unless a ``latest`` label pins it explicitly.

A caller's header may hold a label, an id, a date, an ISO-8601 timestamp or unix seconds. An
instant resolves to the newest version created at or before it, which is what lets a client
written against the API of 1 March keep getting the shape it was written for.

    >>> table = VersionTable(
    ...     "users",
    ...     [("2025-01-15", 1736899200.0), ("2025-06-01", 1748736000.0)],
    ...     labels={"stable": "2025-01-15"},
    ... )
    >>> table.resolve(None), table.resolve("latest"), table.resolve("2025-03-01")
    ('2025-01-15', '2025-06-01', '2025-01-15')

Tables are immutable: when the set of versions or labels changes, build a new table (its cache
starts empty, so a stale resolution can never outlive the data it came from).
"""

from __future__ import annotations

import bisect
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from runtime.errors import InternalError, InvalidArgument, NotFound

__all__ = [
    "LATEST",
    "STABLE",
    "VersionId",
    "VersionTable",
    "is_version_id",
    "parse_instant",
    "parse_version_id",
    "version_instant",
]

STABLE = "stable"
"""The label a caller gets when it sends no ``x-api-version``."""

LATEST = "latest"
"""The implicit label of the newest version."""

ACCEPTED_FORMS = (
    "a label (stable, latest, v1.2.0), a version id (YYYY-MM-DD or tsv:<unix-seconds>-<module>-<seq>), "
    "an ISO-8601 timestamp (2025-03-01T12:00:00Z) or unix seconds (1740000000)"
)

# The one grammar of version ids (manifests, recorded histories and headers all use these).
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TSV = re.compile(r"tsv:([0-9]{1,12})-([a-z][a-z0-9_]*)-([0-9]{1,9})")
_UNIX = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9._+-]{0,63}")
_MAX_ECHO = 80


def _echo(value: str) -> str:
    """The caller's value as it may appear in an error message: quoted and bounded."""
    return repr(value if len(value) <= _MAX_ECHO else value[:_MAX_ECHO] + "...")


@dataclass(frozen=True, slots=True)
class VersionId:
    """A parsed version id. ``instant`` is unix seconds; ``seq`` is 0 for a date."""

    text: str
    kind: Literal["date", "tsv"]
    instant: float
    module: str | None = None
    seq: int = 0


def parse_version_id(text: str) -> VersionId | None:
    """Parse either id form; ``None`` when ``text`` is neither (it may still be a label)."""
    if _DATE.fullmatch(text):
        try:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            return None
        return VersionId(text, "date", day.timestamp())
    match = _TSV.fullmatch(text)
    if match:
        seconds, module, seq = match.groups()
        return VersionId(text, "tsv", float(seconds), module, int(seq))
    return None


def is_version_id(text: str) -> bool:
    """True for either form of a version id: a real date (``2025-06-01``) or ``tsv:<s>-<module>-<n>``."""
    return parse_version_id(text) is not None


def version_instant(version_id: str) -> float:
    """Unix seconds a version id stands for: midnight UTC of a date, or a tsv id's seconds."""
    parsed = parse_version_id(version_id)
    if parsed is None:
        raise ValueError(f"{version_id!r} is not a version id (YYYY-MM-DD or tsv:<unix>-<module>-<seq>)")
    return parsed.instant


def parse_instant(text: str) -> float | None:
    """Unix seconds for an ISO-8601 timestamp, a date or unix seconds; ``None`` otherwise.

    A timestamp without a zone is taken as UTC: a header has no local time to refer to.
    """
    if _UNIX.fullmatch(text):
        return float(text)
    if _DATE.fullmatch(text):
        parsed = parse_version_id(text)
        return None if parsed is None else parsed.instant
    if len(text) < 11 or text[0] not in "0123456789":
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _as_seconds(created_at: float | datetime) -> float:
    if isinstance(created_at, datetime):
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=UTC)
        return created_at.timestamp()
    return float(created_at)


class VersionTable:
    """The versions of one module and their labels, resolving ``x-api-version`` in O(log n).

    A version takes effect at the instant its id names (a date at midnight UTC, a tsv id at
    its unix seconds): that is what a caller can read off the id, so "the API as of 1 March"
    means the same thing to the caller and to the gateway. ``created_at`` (unix seconds or an
    aware datetime, when the version was recorded) only orders versions whose ids name the same
    instant, after the tsv sequence number.

    Resolutions are cached per header string in a bounded LRU; errors are not cached, so junk
    headers cannot push good entries out faster than they would anyway.
    """

    __slots__ = ("_cache", "_cache_size", "_default", "_ids", "_instants", "_known", "_labels", "module")

    def __init__(
        self,
        module: str,
        versions: Sequence[tuple[str, float | datetime]],
        labels: Mapping[str, str] | None = None,
        *,
        cache_size: int = 1024,
    ) -> None:
        self.module = module
        ordered: list[tuple[float, int, float, str]] = []
        seen: set[str] = set()
        for text, created_at in versions:
            parsed = parse_version_id(text)
            if parsed is None:
                raise InternalError(f"module {module!r}: version id {text!r} is neither a date nor a tsv id")
            if text in seen:
                raise InternalError(f"module {module!r}: version id {text!r} is listed twice")
            seen.add(text)
            ordered.append((parsed.instant, parsed.seq, _as_seconds(created_at), text))
        ordered.sort()
        self._instants = [entry[0] for entry in ordered]
        self._ids = tuple(entry[3] for entry in ordered)
        self._known = frozenset(self._ids)
        label_map = dict(labels or {})
        for label, target in label_map.items():
            if target not in seen:
                raise InternalError(f"module {module!r}: label {label!r} points at unknown version {target!r}")
        if self._ids:
            label_map.setdefault(LATEST, self._ids[-1])
        self._labels: Mapping[str, str] = label_map
        self._default = label_map.get(STABLE, self._ids[-1] if self._ids else None)
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size

    @property
    def versions(self) -> tuple[str, ...]:
        """Every version id, oldest first."""
        return self._ids

    @property
    def labels(self) -> Mapping[str, str]:
        """Every label, including the implicit ``latest``."""
        return dict(self._labels)

    def resolve(self, header: str | None) -> str:
        """The version id that ``header`` (the caller's ``x-api-version``) selects.

        Raises :class:`~runtime.errors.InvalidArgument` for a value that is none of the accepted
        forms and :class:`~runtime.errors.NotFound` for an unknown label or id, or an instant
        earlier than every version.
        """
        key = header or ""
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        resolved = self._resolve_uncached(key.strip())
        self._cache[key] = resolved
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return resolved

    def _resolve_uncached(self, value: str) -> str:
        if not value:
            if self._default is None:
                raise NotFound(f"module {self.module!r} has no versions")
            return self._default
        label_target = self._labels.get(value)
        if label_target is not None:
            return label_target
        if value in self._known:
            return value
        version = parse_version_id(value)
        if version is not None and version.kind == "tsv":
            raise NotFound(f"module {self.module!r} has no version {_echo(value)}")
        instant = version.instant if version is not None else parse_instant(value)
        if instant is not None:
            return self._at_or_before(instant, value)
        if _LABEL.fullmatch(value):
            known = ", ".join(sorted(self._labels)) or "none"
            raise NotFound(f"module {self.module!r} has no version label {_echo(value)} (labels: {known})")
        raise InvalidArgument(f"x-api-version {_echo(value)} is not understood; expected {ACCEPTED_FORMS}")

    def _at_or_before(self, instant: float, value: str) -> str:
        index = bisect.bisect_right(self._instants, instant)
        if index == 0:
            raise NotFound(
                f"module {self.module!r} has no version at or before {_echo(value)}"
                + (f"; its oldest is {self._ids[0]!r}" if self._ids else "")
            )
        return self._ids[index - 1]
