"""Observability: JSON logs, OpenTelemetry metrics and traces, the admin port, and the audit trail.

- Logs: :func:`configure_logging` writes JSON lines that carry the request id, handler and
  version from :data:`request_id_var`, :data:`handler_var` and :data:`version_var`.
- Metrics: :class:`Metrics` (counters, gauges, histograms over the OpenTelemetry API, exported in
  Prometheus format), :class:`RedMetrics` for per-call rate/errors/duration, and
  :func:`start_admin_server` serving ``/metrics``, ``/healthz`` and mounted ASGI apps on uvicorn.
- Traces: :func:`configure_tracing`, exporting over OTLP only when an endpoint is configured, and
  :class:`TraceRing`, the recent spans of the process kept in memory (for the playground).
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
    AppendLog,
    AuditRecord,
    AuditSink,
    AuditWriteError,
    FileAuditSink,
    StoreAuditSink,
    open_audit_sink,
    outcome_of,
    read_audit_file,
)
from runtime.observability._logging import (
    JsonFormatter,
    configure_logging,
    handler_var,
    log_context,
    request_id_var,
    version_var,
)
from runtime.observability._metrics import (
    SECONDS_BUCKETS,
    Attributes,
    Counter,
    Gauge,
    Histogram,
    Metrics,
    RedMetrics,
)
from runtime.observability._ring import STEP_EVENT, SpanEvent, SpanRecord, TraceRing
from runtime.observability._tail import LogTail
from runtime.observability._tracing import OTLP_PACKAGE, configure_tracing

__all__ = [
    "OTLP_PACKAGE",
    "SECONDS_BUCKETS",
    "STEP_EVENT",
    "AdminLimits",
    "AdminServer",
    "AppendLog",
    "Attributes",
    "AuditRecord",
    "AuditSink",
        "AuditWriteError",
    "Counter",
    "FileAuditSink",
    "Gauge",
    "Histogram",
    "JsonFormatter",
    "LogTail",
    "Metrics",
    "RedMetrics",
    "SpanEvent",
    "SpanRecord",
    "StoreAuditSink",
    "TraceRing",
    "configure_logging",
    "configure_tracing",
    "handler_var",
    "log_context",
    "open_audit_sink",
    "outcome_of",
    "read_audit_file",
    "request_id_var",
    "start_admin_server",
    "version_var",
]
