"""The audit queue: every finished call's record, kept off the call's path and written in batches.

A worker's endpoints tell an :class:`AuditObserver` that a lifecycle started and finished; it
counts the call (RED metrics) and keeps what the audit record needs. The worker's audit task
wakes when the first record arrives and :func:`write_audit` writes everything that piled up
meanwhile in one append, so under load one wakeup serves many calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime.lcc import RequestMeta
from runtime.observability._audit import AuditRecord, AuditSink, AuditWriteError, outcome_of
from runtime.observability._metrics import Counter, RedMetrics

__all__ = ["MAX_PENDING_AUDIT", "AuditObserver", "audit_redactor", "write_audit"]

log = logging.getLogger("modrpc.audit")

MAX_PENDING_AUDIT = 100_000
"""Audit records that may wait for a slow sink before further ones are dropped (and logged)."""


@dataclass
class AuditObserver:
    """Counts every call (RED metrics) and keeps its audit record for the audit task.

    The record is built and written off the call's path: a finished call only appends what
    it knows to :attr:`pending`, and wakes the audit task when the list was empty, so under
    load one wakeup writes every record that piled up meanwhile, in one append.

    At most ``max_pending`` records wait: past that the sink is not keeping up (a store that
    hangs), and further records are counted in :attr:`dropped` and logged rather than held
    until the process runs out of memory.
    """

    red: RedMetrics | None
    manifest_hash: str
    max_pending: int = MAX_PENDING_AUDIT
    pending: list[tuple[RequestMeta, Sequence[Any], str, float, float, tuple[int, int] | None]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    running: int = 0
    """Lifecycles started and not yet finished."""
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while no lifecycle is running."""
    closing: bool = False
    """Set by the worker's stop: the audit task writes what is left, then ends."""
    dropped: int = 0
    dropped_counter: Counter | None = None
    """``modrpc_audit_dropped_total``: records dropped because the sink did not keep up."""

    def __post_init__(self) -> None:
        self.idle.set()

    def started(self) -> None:
        self.running += 1
        self.idle.clear()

    def finished(
        self,
        meta: RequestMeta,
        events: Sequence[Any],
        error: BaseException | None,
        started: float,
        messages: tuple[int, int] | None = None,
    ) -> None:
        """A call's lifecycle ended; ``messages``: a stream's (received, sent) message counts."""
        self.running -= 1
        if not self.running:
            self.idle.set()
        duration = time.perf_counter() - started
        outcome = outcome_of(error)
        if self.red is not None:
            self.red.observe(meta.method, meta.version, outcome, duration)
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            if self.dropped_counter is not None:
                self.dropped_counter.add(1)
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "the audit sink is not keeping up: %d records wait; %d dropped so far (the "
                    "latest: %s %s)", len(self.pending), self.dropped, meta.request_id, meta.method,
                )
            return
        if not self.pending:
            self.wake.set()
        self.pending.append((meta, events, outcome, time.time() - duration, duration, messages))

    def take(self) -> list[AuditRecord]:
        """The audit records of every call finished since the last take, oldest first."""
        pending, self.pending = self.pending, []
        self.wake.clear()
        return [
            AuditRecord(
                request_id=meta.request_id,
                principal=meta.principal,
                method=meta.method,
                version=meta.version,
                manifest_hash=self.manifest_hash,
                outcome=outcome,
                events=tuple(e.to_json() for e in events),
                started_at=started_at,
                duration_ms=duration * 1000,
                messages=None if messages is None else {"received": messages[0], "sent": messages[1]},
            )
            for meta, events, outcome, started_at, duration, messages in pending
        ]


def audit_redactor(redactor: Any) -> Callable[[Any], Any]:
    """Redaction for audit records, skipped while no secret value has been handed out.

    An audit record is JSON built from strings and numbers (ids, names, event texts), never a
    ``Secret`` object, so until some secret value is known there is nothing in it to mask, and
    walking and copying every record would cost each call tens of microseconds for nothing.
    """

    def redact(record: Any) -> Any:
        return redactor.redact(record) if redactor.values else record

    return redact


async def write_audit(audit: AuditSink, records: list[AuditRecord]) -> None:
    """Write ``records`` to ``audit``; what cannot be written is named in the log, never raised."""
    if not records:
        return
    try:
        await audit.write_many(records)
    except AuditWriteError as exc:
        _unwritten(exc.failed, exc.cause)
    except Exception as exc:
        _unwritten(records, exc)


def _unwritten(records: Sequence[AuditRecord], cause: BaseException) -> None:
    ids = ", ".join(record.request_id for record in records[:5])
    more = f" and {len(records) - 5} more" if len(records) > 5 else ""
    log.error("%d audit records (%s%s) could not be written: %s", len(records), ids, more, cause)
