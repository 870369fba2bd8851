"""The recent spans of this process, kept in memory for the playground's traces.

:class:`TraceRing` is an OpenTelemetry ``SpanProcessor``: added to a ``TracerProvider`` next to
(or instead of) an OTLP exporter, it keeps the last ``capacity`` finished spans, grouped by trace
and findable by the ``modrpc.request_id`` attribute that the runtime's spans carry. OTLP stays
the production path; this ring is bounded and lives only as long as the process.

A span is turned into a small frozen :class:`SpanRecord` when it ends, so nothing holds on to SDK
objects, and :meth:`TraceRing.on_end` costs one lock and a few appends.

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> ring = TraceRing(100)
    >>> provider = TracerProvider()
    >>> provider.add_span_processor(ring)
    >>> with provider.get_tracer("t").start_as_current_span("work", attributes={"modrpc.request_id": "r1"}):
    ...     pass
    >>> [span.name for span in ring.trace_of("r1")]
    ['work']
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

__all__ = ["STEP_EVENT", "SpanEvent", "SpanRecord", "TraceRing"]

REQUEST_ID_ATTRIBUTE = "modrpc.request_id"
STEP_EVENT = "modrpc.step"
"""The span event a step of a call ends with (attribute ``step``: its name; ``value``: what it
decided, e.g. the version resolved), so a span's events time its steps one after another."""


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """One event of a span: its name, wall-clock time (ns) and attributes."""

    name: str
    time_ns: int
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """A finished span as plain data."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    """``SERVER``, ``CLIENT`` or ``INTERNAL``."""
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]
    events: tuple[SpanEvent, ...]
    status: str
    """``UNSET``, ``OK`` or ``ERROR``."""
    status_message: str
    service: str

    @property
    def request_id(self) -> str | None:
        value = self.attributes.get(REQUEST_ID_ATTRIBUTE)
        return str(value) if value is not None else None

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class TraceRing(SpanProcessor):
    """The last ``capacity`` finished spans, by trace and by request id. Thread-safe."""

    def __init__(self, capacity: int = 5000) -> None:
        if capacity < 1:
            raise ValueError(f"a trace ring holds at least one span, not {capacity}")
        self.capacity = capacity
        self._spans: deque[SpanRecord] = deque()
        self._by_trace: dict[str, list[SpanRecord]] = {}
        # request id -> trace ids, newest last; bounded because every trace id in it has spans
        self._traces_of: OrderedDict[str, list[str]] = OrderedDict()
        self._requests_in: dict[str, set[str]] = {}  # trace id -> request ids of its spans
        self._lock = threading.Lock()

    # -- SpanProcessor --------------------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        record = _record_of(span)
        if record is None:
            return
        with self._lock:
            if len(self._spans) >= self.capacity:
                self._forget(self._spans.popleft())
            self._spans.append(record)
            self._by_trace.setdefault(record.trace_id, []).append(record)
            request_id = record.request_id
            if request_id is not None:
                traces = self._traces_of.get(request_id)
                if traces is None:
                    self._traces_of[request_id] = [record.trace_id]
                else:
                    if record.trace_id not in traces:
                        traces.append(record.trace_id)
                    self._traces_of.move_to_end(request_id)
                self._requests_in.setdefault(record.trace_id, set()).add(request_id)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # -- reading --------------------------------------------------------------------------------
    def trace_of(self, request_id: str) -> list[SpanRecord]:
        """Every kept span of the traces that carried ``request_id``, in start order."""
        with self._lock:
            spans = [s for t in self._traces_of.get(request_id, ()) for s in self._by_trace.get(t, ())]
        return sorted(spans, key=lambda s: (s.start_ns, s.end_ns))

    def request_ids(self, limit: int = 100) -> list[str]:
        """The request ids seen most recently, newest first."""
        with self._lock:
            ids = list(self._traces_of)
        return ids[-limit:][::-1]

    def roots(self, limit: int = 100) -> list[SpanRecord]:
        """The newest spans that started a request here (server spans), newest first."""
        found: list[SpanRecord] = []
        with self._lock:
            for span in reversed(self._spans):
                if span.kind == "SERVER" and span.request_id is not None:
                    found.append(span)
                    if len(found) >= limit:
                        break
        return found

    def __len__(self) -> int:
        return len(self._spans)

    def _forget(self, old: SpanRecord) -> None:
        siblings = self._by_trace.get(old.trace_id)
        if siblings is None:
            return
        if siblings and siblings[0] is old:
            siblings.pop(0)
        else:
            siblings[:] = [s for s in siblings if s is not old]
        if not siblings:
            del self._by_trace[old.trace_id]
            for request_id in self._requests_in.pop(old.trace_id, ()):
                traces = self._traces_of.get(request_id)
                if traces is not None and old.trace_id in traces:
                    traces.remove(old.trace_id)
                    if not traces:
                        del self._traces_of[request_id]


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _record_of(span: ReadableSpan) -> SpanRecord | None:
    context = span.context
    if context is None or span.start_time is None or span.end_time is None:
        return None
    parent = span.parent
    resource = span.resource.attributes if span.resource is not None else {}
    return SpanRecord(
        trace_id=_hex(context.trace_id, 32),
        span_id=_hex(context.span_id, 16),
        parent_id=_hex(parent.span_id, 16) if parent is not None else None,
        name=span.name,
        kind=span.kind.name,
        start_ns=span.start_time,
        end_ns=span.end_time,
        attributes=dict(span.attributes or {}),
        events=tuple(SpanEvent(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events),
        status=span.status.status_code.name,
        status_message=span.status.description or "",
        service=str(resource.get("service.name", "")),
    )
