"""The audit trail: append-only file and store sinks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.config import ObservabilitySettings
from runtime.errors import FailedPrecondition, NotFound, ResourceExhausted
from runtime.identity import Principal
from runtime.observability import AuditRecord, AuditWriteError, open_audit_sink, read_audit_file
from runtime.observability._audit import (
    FileAuditSink,
    StoreAuditSink,
    audit_files,
    bounded,
    json_line,
    may_hold_long_value,
    outcome_of,
)


class ListAppendLog:
    """An in-memory append-only log with the store's ``append`` signature."""

    def __init__(self) -> None:
        self.streams: dict[str, list[dict[str, Any]]] = {}

    async def append(self, stream: str, record: dict[str, Any]) -> int:
        entries = self.streams.setdefault(stream, [])
        entries.append(json.loads(json.dumps(record)))
        return len(entries)


def record(n: int = 1, **changes: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "request_id": f"req-{n}",
        "principal": Principal("alice", ("admin",), "jwt"),
        "method": "/orders.v1.Orders/Create",
        "version": "2025-06-01",
        "manifest_hash": "sha256:" + "0" * 64,
        "outcome": "ok",
        "events": [{"kind": "handler_start", "at": 1.0}, {"kind": "handler_end", "at": 1.5}],
        "started_at": 1_750_000_000.25,
        "duration_ms": 12.5,
    }
    fields.update(changes)
    return AuditRecord(**fields)


def test_outcome_is_ok_or_the_status_name() -> None:
    assert outcome_of(None) == "ok"
    assert outcome_of(NotFound("x")) == "NOT_FOUND"
    assert outcome_of(ResourceExhausted("x")) == "RESOURCE_EXHAUSTED"
    assert outcome_of(ZeroDivisionError()) == "INTERNAL"


def test_events_given_as_a_list_are_kept_as_an_immutable_tuple() -> None:
    assert isinstance(record().events, tuple)


async def test_file_sink_appends_one_line_per_record_and_keeps_what_was_there(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    path.parent.mkdir()
    path.write_text('{"earlier": "line"}\n')
    async with FileAuditSink(path) as sink:
        await sink.write(record(1))
        await sink.write(record(2, outcome="NOT_FOUND"))
    async with FileAuditSink(path) as sink:
        await sink.write(record(3))
    lines = path.read_text().splitlines()
    assert lines[0] == '{"earlier": "line"}'
    assert [json.loads(line)["request_id"] for line in lines[1:]] == ["req-1", "req-2", "req-3"]
    assert json.loads(lines[2])["outcome"] == "NOT_FOUND"


async def test_file_sink_creates_folders_and_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "audit.jsonl"
    async with FileAuditSink(path, fsync=True) as sink:
        await sink.write(record())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert list(read_audit_file(path)) == [record()]


async def test_concurrent_writers_never_interleave_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    big_events = [{"kind": "step", "payload": "x" * 5000, "i": i} for i in range(4)]
    async with FileAuditSink(path) as one, FileAuditSink(path, fsync=True) as two:
        await asyncio.gather(
            *((one if n % 2 else two).write(record(n, events=big_events)) for n in range(40))
        )
    records = list(read_audit_file(path))
    assert sorted(r.request_id for r in records) == sorted(f"req-{n}" for n in range(40))


async def test_closed_file_sink_refuses_writes_and_close_is_idempotent(tmp_path: Path) -> None:
    sink = FileAuditSink(tmp_path / "audit.jsonl")
    await sink.write(record())
    await sink.close()
    await sink.close()
    with pytest.raises(FailedPrecondition, match="closed"):
        await sink.write(record())


async def test_sinks_apply_the_redactor_before_writing(tmp_path: Path) -> None:
    def redact(data: Any) -> Any:
        return json.loads(json.dumps(data).replace("hunter2", "***"))

    path = tmp_path / "audit.jsonl"
    leaky = record(events=[{"kind": "handler_error", "error": "bad password hunter2"}])
    async with FileAuditSink(path, redact=redact) as sink:
        await sink.write(leaky)
    log = ListAppendLog()
    await StoreAuditSink(log, redact=redact).write(leaky)
    assert "hunter2" not in path.read_text()
    assert log.streams["audit"][0]["events"][0]["error"] == "bad password ***"


async def test_store_sink_appends_the_record_json_to_the_audit_stream() -> None:
    log = ListAppendLog()
    sink = StoreAuditSink(log)
    await sink.write(record(1))
    await sink.write(record(2))
    await sink.close()
    assert [AuditRecord.from_json(r) for r in log.streams["audit"]] == [record(1), record(2)]


def test_open_audit_sink_follows_the_settings(tmp_path: Path) -> None:
    file_sink = open_audit_sink(ObservabilitySettings(audit_path=tmp_path / "a.jsonl"))
    assert isinstance(file_sink, FileAuditSink) and file_sink.path == tmp_path / "a.jsonl"
    store_sink = open_audit_sink(ObservabilitySettings(audit_sink="store"), store=ListAppendLog())
    assert isinstance(store_sink, StoreAuditSink)
    with pytest.raises(ValueError, match="no store"):
        open_audit_sink(ObservabilitySettings(audit_sink="store"))


def test_a_record_missing_a_field_is_refused_by_name(tmp_path: Path) -> None:
    data = record().to_json()
    del data["manifest_hash"]
    with pytest.raises(ValueError, match="manifest_hash"):
        AuditRecord.from_json(data)
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps(data) + "\n")
    with pytest.raises(ValueError, match=r"audit.jsonl:1: audit record is missing manifest_hash"):
        list(read_audit_file(path))


async def test_file_sink_keeps_each_record_on_one_line_whatever_its_text(tmp_path: Path) -> None:
    # U+0085, U+2028 and U+2029 are line breaks to some tools; they are written escaped.
    tricky = "next\u0085line\u2028sep\u2029para\nnewline \u00e9\u4e2d"
    path = tmp_path / "audit.jsonl"
    sink = FileAuditSink(path)
    await sink.write_many([record(1, request_id="r-1", events=({"kind": "alert", "error": tricky},)), record(2)])
    await sink.close()
    data = path.read_bytes()
    assert data.count(b"\n") == 2
    for raw in (b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9"):
        assert raw not in data
    first, second = read_audit_file(path)
    assert first.events[0]["error"] == tricky and second.request_id == record(2).request_id


class FlakyAppendLog(ListAppendLog):
    """Refuses the appends whose request ids it is given, as a store does on a transient error."""

    def __init__(self, refuse: set[str]) -> None:
        super().__init__()
        self.refuse = refuse

    async def append(self, stream: str, record: dict[str, Any]) -> int:
        if record["request_id"] in self.refuse:
            raise RuntimeError("database is locked")
        return await super().append(stream, record)


async def test_a_store_append_that_fails_keeps_only_its_own_record_out() -> None:
    log = FlakyAppendLog({"req-2"})
    with pytest.raises(AuditWriteError) as caught:
        await StoreAuditSink(log).write_many([record(n) for n in range(1, 6)])
    assert [r.request_id for r in caught.value.failed] == ["req-2"]
    assert "database is locked" in str(caught.value.cause)
    assert [e["request_id"] for e in log.streams["audit"]] == ["req-1", "req-3", "req-4", "req-5"]


async def test_records_orjson_refuses_are_still_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    odd = [
        record(2, events=({"kind": "alert", "error": "bad byte \udcff"},)),  # a lone surrogate
        record(3, events=({"kind": "alert", "count": 2**70},)),  # past 64 bits
    ]
    async with FileAuditSink(path) as sink:
        await sink.write_many([record(1), *odd, record(4)])
    back = list(read_audit_file(path))
    assert [r.request_id for r in back] == ["req-1", "req-2", "req-3", "req-4"]
    assert back[1].events[0]["error"] == "bad byte \udcff"
    assert back[2].events[0]["count"] == 2**70


async def test_a_record_the_redactor_fails_on_keeps_only_itself_out(tmp_path: Path) -> None:
    def redact(data: Any) -> Any:
        if data["request_id"] == "req-2":
            raise ValueError("cannot redact")
        return data

    path = tmp_path / "audit.jsonl"
    async with FileAuditSink(path, redact=redact) as sink:
        with pytest.raises(AuditWriteError) as caught:
            await sink.write_many([record(1), record(2), record(3)])
    assert [r.request_id for r in caught.value.failed] == ["req-2"]
    assert [r.request_id for r in read_audit_file(path)] == ["req-1", "req-3"]


# -- bounded records and retention ------------------------------------------------------------


async def test_a_long_value_is_cut_with_its_length_and_hash_in_both_sinks(tmp_path: Path) -> None:
    """What a caller sends (a 3 MB field echoed in a validation error) never grows the trail."""
    huge = "x" * 3_000_000
    events = [{"kind": "validation_error", "error": f"name: got {huge!r}"}]
    path = tmp_path / "audit.jsonl"
    async with FileAuditSink(path, max_value_chars=100) as sink:
        await sink.write_many([record(1, events=events)])
    log = ListAppendLog()
    await StoreAuditSink(log, max_value_chars=100).write(record(2, events=events))
    full = f"name: got {huge!r}"
    digest = hashlib.sha256(full.encode()).hexdigest()
    for written in (next(read_audit_file(path)).to_json(), log.streams["audit"][0]):
        error = written["events"][0]["error"]
        assert error.startswith("name: got 'xxx") and len(error) < 250
        assert f"[{len(full)} chars, sha256:{digest}]" in error
    assert path.stat().st_size < 2000
    assert next(read_audit_file(path)).request_id == "req-1"  # short values are untouched


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@given(_JSON, st.integers(min_value=1, max_value=30))
def test_the_quick_look_at_a_line_never_misses_a_value_bounding_would_cut(data: Any, max_chars: int) -> None:
    """The file sink bounds a record only when its line may hold a long value: whenever bounding
    would change the record, the quick look says so (quotes, escapes and any characters)."""
    if bounded(data, max_chars) != data:
        assert may_hold_long_value(json_line(data), max_chars)


async def test_the_file_rotates_into_segments_and_prune_keeps_the_size_budget(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    pad = [{"kind": "handler_start", "note": "p" * 900}]
    async with FileAuditSink(path, segment_bytes=10_000, max_value_chars=1000) as sink:
        for n in range(60):
            await sink.write_many([record(n, events=pad)])
        files = audit_files(path)
        assert len(files) >= 5 and files[-1] == path
        total = sum(f.stat().st_size for f in files)
        lines = sum(len(f.read_text().splitlines()) for f in files)
        assert lines == 60
        removed = await sink.prune(before=0.0, max_bytes=25_000)
        kept = audit_files(path)
        assert sum(f.stat().st_size for f in kept) <= 25_000 < total
        assert removed + sum(len(f.read_text().splitlines()) for f in kept) == 60
        ids = [r.request_id for f in kept for r in read_audit_file(f)]
        assert ids == [f"req-{n}" for n in range(60 - len(ids), 60)]  # the newest are kept
        await sink.write_many([record(99)])  # writing goes on after a prune
    assert [r.request_id for r in read_audit_file(path)][-1] == "req-99"
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in audit_files(path))


async def test_prune_by_age_rotates_the_active_file_and_removes_old_segments(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    async with FileAuditSink(path, segment_bytes=1 << 20) as sink:
        await sink.write_many([record(1, started_at=100.0), record(2, started_at=200.0)])
        assert await sink.prune(before=150.0, max_bytes=1 << 30) == 0  # rotated, not yet old
        [segment] = audit_files(path)
        os.utime(segment, (200.0, 200.0))  # its newest record is from 200
        assert await sink.prune(before=250.0, max_bytes=1 << 30) == 2
        assert audit_files(path) == []
        await sink.write_many([record(3)])
    assert [r.request_id for r in read_audit_file(path)] == ["req-3"]


async def test_two_writers_of_one_file_follow_a_rotation(tmp_path: Path) -> None:
    """Workers of one project share the audit file; one rotating it must not lose the other's."""
    path = tmp_path / "audit.jsonl"
    first = FileAuditSink(path, segment_bytes=5_000)
    second = FileAuditSink(path, segment_bytes=5_000)
    for n in range(40):
        await (first if n % 2 else second).write_many([record(n)])
    await first.close()
    await second.close()
    ids = sorted(int(r.request_id[4:]) for f in audit_files(path) for r in read_audit_file(f))
    assert ids == list(range(40))
    assert len(audit_files(path)) > 2
