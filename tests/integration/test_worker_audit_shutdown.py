"""A worker's stop writes the audit record of every call it served, even with a slow store:
the batch being written is never cut short, and nothing is held without bound."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from runtime.identity import ANONYMOUS
from runtime.lcc import RequestMeta
from runtime.observability import AuditObserver
from runtime.store import open_store
from runtime.worker import Worker
from tests.conftest import PROBE_MODULES_DIR, Dial
from tests.fixtures.worker_modules.probe_client import ProbeClient


async def test_stop_writes_every_audit_record_while_the_store_is_slow(
    worker_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
    dial: Dial,
) -> None:
    settings = worker_settings()
    worker = Worker("probe", settings, host="127.0.0.1", port=0, modules_dir=PROBE_MODULES_DIR)
    await worker.start()
    stopped = False
    try:
        store = worker.store
        append = store.append

        async def slow_append(stream: str, record: dict[str, Any]) -> int:
            if stream == "audit":
                await asyncio.sleep(0.005)  # a store across the network
            result: int = await append(stream, record)
            return result

        monkeypatch.setattr(store, "append", slow_append)
        ids = [f"audit-shutdown-{n:02d}" for n in range(40)]
        async with dial(worker) as channel:
            client = ProbeClient(channel, worker.service.catalog.latest.descriptor)
            await asyncio.gather(
                *(client.call("Echo", {"text": rid}, metadata=[("x-request-id", rid)]) for rid in ids)
            )
        await worker.stop(0.5)  # the audit task is still writing the records, 5 ms each
        stopped = True
    finally:
        if not stopped:
            await worker.stop(0)
    reader = open_store(settings.store_url)
    await reader.start()
    try:
        records = await reader.read("audit", limit=100_000)
    finally:
        await reader.close()
    audited = sorted(r["request_id"] for _, r in records if r["request_id"] in set(ids))
    assert audited == ids


def meta(n: int) -> RequestMeta:
    return RequestMeta(request_id=f"r-{n}", handler="m.M", method="/m.v1.M/M", version="v1", principal=ANONYMOUS)


def test_records_past_the_bound_are_dropped_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    observer = AuditObserver(None, manifest_hash="h", max_pending=3)
    with caplog.at_level(logging.ERROR, logger="modrpc.worker"):
        for n in range(5):
            observer.started()
            observer.finished(meta(n), [], None, time.perf_counter())
    assert [r.request_id for r in observer.take()] == ["r-0", "r-1", "r-2"]
    assert observer.dropped == 2
    assert "the audit sink is not keeping up" in caplog.text


async def test_a_call_still_unwinding_at_stop_is_waited_for_and_audited(
    worker_settings: Callable[..., Any],
) -> None:
    worker = Worker("probe", worker_settings(), host="127.0.0.1", port=0, modules_dir=PROBE_MODULES_DIR)
    await worker.start()
    observer = worker._observer
    assert observer is not None
    observer.started()  # a call whose undo steps run on after the grace

    async def unwind() -> None:
        await asyncio.sleep(0.3)
        observer.finished(meta(1), [], None, time.perf_counter())

    unwinding = asyncio.create_task(unwind())
    store_url = worker.settings.store_url
    await worker.stop(0)
    await unwinding
    reader = open_store(store_url)
    await reader.start()
    try:
        records = await reader.read("audit", limit=100_000)
    finally:
        await reader.close()
    assert [r["request_id"] for _, r in records] == ["r-1"]
