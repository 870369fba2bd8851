"""A worker's retention loop: old audit records and snapshots go, in the background, every
``retention.interval``, and what went is counted in ``modrpc_*_pruned_total``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import pytest

from runtime.config import RetentionSettings
from runtime.errors import Unavailable
from runtime.identity import Principal
from runtime.lcc import LocalContext, MemorySnapshotStore, RequestMeta, Snapshot
from runtime.observability import AuditRecord, Metrics
from runtime.observability._audit import FileAuditSink, audit_files
from runtime.worker._server import _retain

DAY = 86_400.0


def audit_record(n: int) -> AuditRecord:
    return AuditRecord(
        request_id=f"req-{n}", principal=Principal("ada", (), "jwt"), method="/orders.v1.Orders/Create",
        version="2025-06-01", manifest_hash="sha256:" + "0" * 64, outcome="ok", events=[],
        started_at=time.time(), duration_ms=1.0,
    )  # fmt: skip


def snapshot_of(request_id: str) -> Snapshot:
    meta = RequestMeta(
        request_id=request_id, handler="orders.PlaceOrder", method="/orders.v1.OrdersService/PlaceOrder",
        version="2025-01-15", flags=frozenset(), deadline=None, principal=Principal("ada", (), "jwt"),
    )  # fmt: skip
    return LocalContext(meta).snapshot()


class DownOnce(MemorySnapshotStore):
    """A snapshot store whose first prune fails (the store is down for one pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def prune(self, *, before: float, max_bytes: int) -> int:
        if not self.failed:
            self.failed = True
            raise Unavailable("manifest store postgresql://db is unavailable")
        return await super().prune(before=before, max_bytes=max_bytes)


async def test_old_records_and_snapshots_are_pruned_in_the_background_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "modrpc.worker")
    metrics = Metrics("retention-test")
    snapshots = DownOnce()
    for n in range(3):
        await snapshots.save(snapshot_of(f"r-{n}"))
    async with FileAuditSink(tmp_path / "audit.jsonl", segment_bytes=1 << 20) as audit:
        await audit.write_many([audit_record(n) for n in range(4)])
        later = time.time() + 31 * DAY  # a month on: everything is past the default ages
        task = asyncio.create_task(_retain(RetentionSettings(interval=0.05), audit, snapshots, metrics, clock=lambda: later))
        try:
            async with asyncio.timeout(5):
                while await snapshots.list() or b"modrpc_audit_pruned_total 4.0" not in metrics.render():  # noqa: ASYNC110 - polls state with no event
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        rendered = metrics.render()
        assert b"modrpc_snapshots_pruned_total 3.0" in rendered
        assert b"modrpc_audit_pruned_total 4.0" in rendered
        assert audit_files(tmp_path / "audit.jsonl") == []
    assert any("could not be removed" in r.getMessage() for r in caplog.records), "the failed pass is said"
    metrics.close()


class Nothing:
    """An audit trail or snapshot store with nothing to prune."""

    async def prune(self, *, before: float, max_bytes: int) -> int:
        return 0


async def test_the_pruned_counters_are_listed_at_zero_before_anything_is_pruned() -> None:
    """A zero is told apart from a missing metric (a worker that never pruned, or no retention)."""
    metrics = Metrics("retention-zero")
    task = asyncio.create_task(_retain(RetentionSettings(interval=60), Nothing(), Nothing(), metrics))
    await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    rendered = metrics.render()
    assert b"modrpc_audit_pruned_total 0.0" in rendered and b"modrpc_snapshots_pruned_total 0.0" in rendered
    metrics.close()
