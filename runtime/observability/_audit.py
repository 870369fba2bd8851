"""The audit trail: one append-only record per handler execution (SPEC §6, Property 42).

A record says who called what, at which version and manifest, how it ended and what happened on
the way (the lifecycle events). Sinks only ever append: :class:`FileAuditSink` writes JSON lines
with one ``write(2)`` per batch of whole records to a file opened with ``O_APPEND``, and
:class:`StoreAuditSink` appends to the manifest store's ``audit`` stream.

Bounded, so that callers cannot fill the disk through it: every text value of a record is cut
to ``max_value_chars`` and followed by its full length and SHA-256 (:func:`bounded`), so a
record never grows with what a caller sends; and both sinks ``prune`` by age and total size
(retention, run in the background by the worker). The file sink keeps the trail as the active
file plus rotated segments beside it (``audit.jsonl.<ns>``), each up to a quarter of the size
budget, and removes whole segments, oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from runtime.config import ObservabilitySettings
from runtime.errors import FailedPrecondition, status_of
from runtime.files import private_file
from runtime.identity import Principal

__all__ = [
    "AppendLog",
    "AuditRecord",
    "AuditSink",
    "AuditWriteError",
    "FileAuditSink",
    "StoreAuditSink",
    "audit_files",
    "bounded",
    "open_audit_sink",
    "outcome_of",
    "read_audit_file",
]

Redact = Callable[[Any], Any]

DEFAULT_MAX_VALUE_CHARS = 1024


def bounded(data: Any, max_chars: int = DEFAULT_MAX_VALUE_CHARS) -> Any:
    """``data`` (JSON-shaped) with every string longer than ``max_chars`` cut to that many
    characters and followed by its length and SHA-256, so the record says what was there
    without keeping it.

        >>> bounded({"error": "x" * 100}, max_chars=8)["error"]
        'xxxxxxxx… [100 chars, sha256:09ecb6ebc8bcefc733f6f2ec44f791abeed6a99edf0cc31519637898aebd52d8]'
    """
    if isinstance(data, str):
        if len(data) <= max_chars:
            return data
        digest = hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{data[:max_chars]}… [{len(data)} chars, sha256:{digest}]"
    if isinstance(data, Mapping):
        return {bounded(k, max_chars): bounded(v, max_chars) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [bounded(v, max_chars) for v in data]
    return data


def may_hold_long_value(line: bytes, max_chars: int) -> bool:
    """Whether the JSON ``line`` may hold a string longer than ``max_chars`` characters.

    Never wrong when it says no: a string's characters all lie between two quotes, each written
    as at least one byte, so with no escaped quote in the line no string is longer than the
    longest run of bytes between quotes. Cheaper than walking the record (one regular expression),
    which :func:`bounded` then does only when it says yes.

        >>> may_hold_long_value(b'{"a":"xyz"}', 3), may_hold_long_value(b'{"a":"xyzw"}', 3)
        (False, True)
    """
    if len(line) <= max_chars:
        return False
    if b'\\"' in line:
        return True
    return _long_run(max_chars).search(line) is not None


@functools.cache
def _long_run(max_chars: int) -> re.Pattern[bytes]:
    """A quote followed by more than ``max_chars`` bytes none of which is a quote (anchored at
    the quote, where every string starts: the search is linear)."""
    return re.compile(b'"[^"]{%d}' % (max_chars + 1))


def outcome_of(error: BaseException | None) -> str:
    """``"ok"`` for success, else the gRPC status name the error maps to (``"NOT_FOUND"``)."""
    return "ok" if error is None else status_of(error).name


@dataclass(frozen=True)
class AuditRecord:
    """What happened in one handler execution.

    ``started_at`` is wall-clock unix seconds; ``events`` are the lifecycle events as JSON
    objects, in order.
    """

    request_id: str
    principal: Principal
    method: str
    version: str
    manifest_hash: str
    outcome: str
    events: tuple[Mapping[str, Any], ...] = field(default=())
    started_at: float = 0.0
    duration_ms: float = 0.0
    messages: Mapping[str, int] | None = None
    """For a streaming call, how many messages went each way: ``{"received": n, "sent": m}``
    (request messages the handler was given, response messages sent); None for a unary call."""

    def __post_init__(self) -> None:
        if not isinstance(self.events, tuple):
            object.__setattr__(self, "events", tuple(self.events))

    def to_json(self) -> dict[str, Any]:
        data = {
            "request_id": self.request_id,
            "principal": self.principal.to_json(),
            "method": self.method,
            "version": self.version,
            "manifest_hash": self.manifest_hash,
            "outcome": self.outcome,
            "events": [event if type(event) is dict else dict(event) for event in self.events],
            "started_at": self.started_at,
            "duration_ms": self.duration_ms,
        }
        if self.messages is not None:
            data["messages"] = dict(self.messages)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditRecord:
        """The record ``to_json`` produced. A missing field is a ``ValueError`` naming it."""
        missing = [name for name in _FIELDS if name not in data]
        if missing:
            raise ValueError(f"audit record is missing {', '.join(missing)}")
        return cls(
            request_id=data["request_id"],
            principal=Principal.from_json(data["principal"]),
            method=data["method"],
            version=data["version"],
            manifest_hash=data["manifest_hash"],
            outcome=data["outcome"],
            events=tuple(data["events"]),
            started_at=float(data["started_at"]),
            duration_ms=float(data["duration_ms"]),
            messages=data.get("messages"),
        )


_FIELDS = (
    "request_id",
    "principal",
    "method",
    "version",
    "manifest_hash",
    "outcome",
    "events",
    "started_at",
    "duration_ms",
)


class AuditWriteError(Exception):
    """Some records of a batch were not written (``failed``, in order); the others were."""

    def __init__(self, failed: Sequence[AuditRecord], cause: BaseException) -> None:
        super().__init__(f"{len(failed)} audit records were not written: {cause}")
        self.failed = tuple(failed)
        self.cause = cause


class AuditSink(Protocol):
    """Where audit records go. Writes only append; nothing is ever rewritten."""

    async def write(self, record: AuditRecord) -> None: ...

    async def write_many(self, records: Sequence[AuditRecord]) -> None:
        """Append ``records`` in order (a worker hands over what piled up since its last write).

        One record that cannot be written does not keep the others out: they are written, and
        :class:`AuditWriteError` then names the ones that were not.
        """
        ...

    async def prune(self, *, before: float, max_bytes: int) -> int:
        """Remove records written before ``before`` (unix seconds), then the oldest until the
        rest take at most about ``max_bytes``; how many records went."""
        ...

    async def close(self) -> None: ...


class AppendLog(Protocol):
    """The two methods of the manifest store the store sink depends on."""

    async def append(self, stream: str, record: dict[str, Any]) -> int: ...

    async def prune(
        self, stream: str, *, before: float | None = None, max_bytes: int | None = None
    ) -> int: ...


class FileAuditSink:
    """Audit records as JSON lines appended to ``path`` (created ``0600`` with its folders).

    Each record is one ``os.write`` on a descriptor opened with ``O_APPEND``: the kernel places
    every record at the end of the file whole, even with several processes writing, and nothing
    is buffered in the process to be lost on a crash. With ``fsync`` each record is also flushed
    to disk (in a worker thread, since fsync blocks). ``redact`` is applied to each record's JSON
    before it is written, to keep secrets out; then every value is :func:`bounded`.

    Once the file passes ``segment_bytes`` it is renamed to a segment (``<path>.<ns>``, under a
    lock so two processes do not both rotate) and a new file is started; a writer in another
    process notices that the path names another file at its next write and reopens it.
    """

    def __init__(
        self,
        path: Path,
        *,
        fsync: bool = False,
        redact: Redact | None = None,
        max_value_chars: int = DEFAULT_MAX_VALUE_CHARS,
        segment_bytes: int | None = None,
    ) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._redact = redact
        self._max_value_chars = max_value_chars
        self._segment_bytes = segment_bytes
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._closed = False

    async def write(self, record: AuditRecord) -> None:
        await self._write(self._line(record))

    async def _write(self, data: bytes) -> None:
        if self._fsync:
            await asyncio.to_thread(self._append, data)
        else:
            # An append to a local file is microseconds; a thread hop would cost more.
            self._append(data)

    async def write_many(self, records: Sequence[AuditRecord]) -> None:
        """Append every record, whole, in one ``write(2)`` (and one fsync when asked for)."""
        if not records:
            return
        lines: list[bytes] = []
        failed: list[AuditRecord] = []
        cause: BaseException | None = None
        for record in records:
            try:
                lines.append(self._line(record))
            except Exception as exc:  # e.g. a redactor that fails on it: the others still go
                failed.append(record)
                cause = cause or exc
        try:
            if lines:
                await self._write(b"".join(lines))
        except Exception as exc:
            raise AuditWriteError(records, exc) from exc
        if failed:
            assert cause is not None
            raise AuditWriteError(failed, cause)

    def _line(self, record: AuditRecord) -> bytes:
        data = record.to_json()
        if self._redact is not None:
            data = self._redact(data)
        line = json_line(data)
        if may_hold_long_value(line, self._max_value_chars):
            line = json_line(bounded(data, self._max_value_chars))
        return line

    def _open(self) -> int:
        private_file(self.path)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _append(self, line: bytes) -> None:
        with self._lock:
            if self._closed:
                raise FailedPrecondition(f"the audit sink for {self.path} is closed")
            fd = self._current()
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self._fsync:
                os.fsync(fd)
            if self._segment_bytes is not None and os.fstat(fd).st_size >= self._segment_bytes:
                self._rotate(fd)

    def _current(self) -> int:
        """The descriptor of the file at ``path`` now (another process may have rotated it)."""
        fd = self._fd
        if fd is not None and self._segment_bytes is not None:
            try:
                moved = os.stat(self.path).st_ino != os.fstat(fd).st_ino
            except FileNotFoundError:
                moved = True
            if moved:
                os.close(fd)
                fd = self._fd = None
        if fd is None:
            fd = self._fd = self._open()
        return fd

    def _rotate(self, fd: int) -> None:
        """Rename the full file to a segment and start a new one, unless another process did."""
        with _locked(self.path):
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.rename(self.path, self.path.with_name(f"{self.path.name}.{time.time_ns():020d}"))
        os.close(fd)
        self._fd = None

    async def prune(self, *, before: float, max_bytes: int) -> int:
        """Remove the segments whose newest record is older than ``before``, then the oldest
        while the trail is past ``max_bytes``; rotates the active file first when its oldest
        record is too old. How many records went (counted before a segment is removed)."""
        return await asyncio.to_thread(self._prune, before, max_bytes)

    def _prune(self, before: float, max_bytes: int) -> int:
        with self._lock:
            if self._closed:
                return 0
            oldest = _first_started_at(self.path)
            if oldest is not None and oldest < before:  # the active file ages out whole, later
                fd = self._current()
                self._rotate(fd)
        removed = 0
        segments = audit_files(self.path)[:-1] if self.path.exists() else audit_files(self.path)
        sizes = {p: _size(p) for p in segments}
        total = sum(sizes.values()) + _size(self.path)
        for segment in segments:
            expired = _mtime(segment) < before
            if not expired and total <= max_bytes:
                continue
            with contextlib.suppress(FileNotFoundError):  # another process pruned it first
                lines = _count_lines(segment)
                segment.unlink()
                removed += lines
            total -= sizes[segment]
        return removed

    async def close(self) -> None:
        """Close the file. Safe to call twice; later writes fail."""
        with self._lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    async def __aenter__(self) -> FileAuditSink:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


def audit_files(path: Path) -> list[Path]:
    """The files of the audit trail at ``path``, oldest first: rotated segments, then ``path``."""
    path = Path(path)
    prefix = f"{path.name}."
    segments = sorted(
        p for p in path.parent.glob(f"{glob_escape(path.name)}.*")
        if p.name[len(prefix):].isdigit()
    )  # fmt: skip
    return [*segments, path] if path.exists() else segments


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path``, shared by every process writing it."""
    lock = private_file(path.with_name(f"{path.name}.lock"))
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _count_lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _first_started_at(path: Path) -> float | None:
    """When the oldest record of ``path`` started, from its first line; None when empty."""
    try:
        with open(path, "rb") as handle:
            line = handle.readline(1 << 20)
    except FileNotFoundError:
        return None
    try:
        started = json.loads(line)["started_at"]
    except (ValueError, KeyError, TypeError):
        return None
    return float(started) if isinstance(started, int | float) else None


_LINE_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))
"""UTF-8 of the characters that line-oriented tools take for line breaks, and their JSON escapes."""


def json_line(data: Any) -> bytes:
    """``data`` as one line of JSON (UTF-8, ending in a newline), written by orjson.

    Anything JSON has no type for is written as ``str(value)``. U+0085, U+2028 and U+2029 are
    escaped, so no tool that splits on them cuts a record in two: orjson writes them raw. What
    orjson refuses (a lone surrogate in a string, an integer past 64 bits) is written by the
    standard library instead, as ASCII with escapes.
    """
    try:
        line = orjson.dumps(data, default=str, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return (json.dumps(data, default=str, ensure_ascii=True) + "\n").encode("ascii")
    if not line.isascii():  # one fast pass settles the usual line, which is all ASCII
        for raw, escaped in _LINE_BREAKS:
            if raw in line:
                line = line.replace(raw, escaped)
    return line


def read_audit_file(path: Path) -> Iterator[AuditRecord]:
    """The records in an audit file, oldest first."""
    with open(path, encoding="utf-8", newline="\n") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield AuditRecord.from_json(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: {exc}") from exc


class StoreAuditSink:
    """Audit records appended to the manifest store's ``stream`` (default ``audit``).

    Depends only on ``append(stream, record)`` and ``prune`` (retention), so any store with
    those methods works. The store translates its own errors; the store's lifetime
    belongs to whoever opened it, so ``close`` leaves it open.
    """

    def __init__(
        self,
        store: AppendLog,
        *,
        stream: str = "audit",
        redact: Redact | None = None,
        max_value_chars: int = DEFAULT_MAX_VALUE_CHARS,
    ) -> None:
        self._store = store
        self._stream = stream
        self._redact = redact
        self._max_value_chars = max_value_chars

    async def write(self, record: AuditRecord) -> None:
        data = record.to_json()
        if self._redact is not None:
            data = self._redact(data)
        await self._store.append(self._stream, bounded(data, self._max_value_chars))

    async def write_many(self, records: Sequence[AuditRecord]) -> None:
        """Append the records one by one, in order; one that fails does not stop the rest."""
        failed: list[AuditRecord] = []
        cause: BaseException | None = None
        for record in records:
            try:
                await self.write(record)
            except Exception as exc:  # a transient store error ("database is locked"): go on
                failed.append(record)
                cause = cause or exc
        if failed:
            assert cause is not None
            raise AuditWriteError(failed, cause)

    async def prune(self, *, before: float, max_bytes: int) -> int:
        return await self._store.prune(self._stream, before=before, max_bytes=max_bytes)

    async def close(self) -> None:
        return None


def open_audit_sink(
    settings: ObservabilitySettings,
    *,
    store: AppendLog | None = None,
    redact: Redact | None = None,
    segment_bytes: int | None = None,
) -> AuditSink:
    """The sink ``settings.audit_sink`` names: the audit file, or ``store``'s audit stream.

    ``segment_bytes``: the size at which the file is rotated (retention removes whole segments);
    None: never rotated.
    """
    chars = settings.audit_max_value_chars
    if settings.audit_sink == "store":
        if store is None:
            raise ValueError("observability.audit_sink is 'store' but no store was given")
        return StoreAuditSink(store, redact=redact, max_value_chars=chars)
    return FileAuditSink(
        settings.audit_path,
        fsync=settings.audit_fsync,
        redact=redact,
        max_value_chars=chars,
        segment_bytes=segment_bytes,
    )
