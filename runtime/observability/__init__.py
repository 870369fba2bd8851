"""Observability: JSON logs, OpenTelemetry metrics and traces, the admin port, and the audit trail.

- Logs: :func:`configure_logging` writes JSON lines that carry the request id, handler and
  version from :data:`request_id_var`, :data:`handler_var` and :data:`version_var`, or
  readable lines (:class:`ConsoleFormatter`) for a person at a terminal.
- Metrics: :class:`Metrics` (counters, gauges, histograms over the OpenTelemetry API, exported in
  Prometheus format), :class:`RedMetrics` for per-call rate/errors/duration, and
  :func:`start_admin_server` serving ``/metrics``, ``/healthz`` and mounted ASGI apps on uvicorn.
- Traces: :func:`configure_tracing`, exporting over OTLP only when an endpoint is configured;
  :class:`ServerTracer` and :class:`ClientTracer` open each call's spans inline, tagged with the
  request id, handler id and version; :class:`TraceRing` keeps the process's recent spans in
  memory (for the playground).
- Audit: :class:`AuditRecord` written to an append-only :class:`AuditSink`; :class:`LogTail`
  follows it (or the stored snapshots) from near its end.

    >>> metrics = Metrics("demo")
    >>> RedMetrics(metrics).observe("/users.v1.Users/Get", "2025-06-01", "OK", 0.012)
    >>> b"modrpc_requests_total" in metrics.render()
    True
    >>> metrics.close()
"""

from runtime.observability._admin import AdminLimits, AdminServer, start_admin_server
from runtime.observability._audit import (
    AuditRecord,
    AuditSink,
    AuditWriteError,
    bounded,
    open_audit_sink,
    read_audit_file,
)
from runtime.observability._audit_queue import AuditObserver, audit_redactor, write_audit
from runtime.observability._logging import (
    MODULE_ATTR,
    configure_logging,
    handler_var,
    log_context,
    request_id_var,
    version_var,
    wants_console,
)
from runtime.observability._metrics import Counter, Gauge, Histogram, Metrics, RedMetrics
from runtime.observability._ring import STEP_EVENT, SpanEvent, SpanRecord, TraceRing
from runtime.observability._spans import (
    HANDLER_ATTRIBUTE,
    REQUEST_ID_ATTRIBUTE,
    VERSION_ATTRIBUTE,
    ClientTracer,
    ServerTracer,
)
from runtime.observability._tail import LogTail
from runtime.observability._tracing import configure_tracing

__all__ = [
    "HANDLER_ATTRIBUTE",
    "MODULE_ATTR",
    "REQUEST_ID_ATTRIBUTE",
    "STEP_EVENT",
    "VERSION_ATTRIBUTE",
    "AdminLimits",
    "AdminServer",
    "AuditObserver",
    "AuditRecord",
    "AuditSink",
    "AuditWriteError",
    "ClientTracer",
    "Counter",
    "Gauge",
    "Histogram",
    "LogTail",
    "Metrics",
    "RedMetrics",
    "ServerTracer",
    "SpanEvent",
    "SpanRecord",
    "TraceRing",
    "audit_redactor",
    "bounded",
    "configure_logging",
    "configure_tracing",
    "handler_var",
    "log_context",
    "open_audit_sink",
    "read_audit_file",
    "request_id_var",
    "start_admin_server",
    "version_var",
    "wants_console",
    "write_audit",
]
