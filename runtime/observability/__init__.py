"""Observability: JSON logs, OpenTelemetry metrics and traces, the admin port, and the audit trail.

- Logs: :func:`configure_logging` writes JSON lines that carry the request id, handler and
  version from :data:`request_id_var`, :data:`handler_var` and :data:`version_var`, or
  readable lines (:class:`ConsoleFormatter`) for a person at a terminal.
- Metrics: :class:`Metrics` (counters, gauges, histograms over the OpenTelemetry API, exported in
  Prometheus format), :class:`RedMetrics` for per-call rate/errors/duration, and
  :func:`start_admin_server` serving ``/metrics`` and ``/healthz``.
- Traces: :func:`configure_tracing`, exporting over OTLP only when an endpoint is configured;
  :class:`ServerTracer` and :class:`ClientTracer` open each call's spans inline, tagged with the
  request id, handler id and version.
- Audit: :class:`AuditRecord` written to an append-only :class:`AuditSink`.

    >>> metrics = Metrics("demo")
    >>> RedMetrics(metrics).observe("/users.v1.Users/Get", "2025-06-01", "OK", 0.012)
    >>> b"modrpc_requests_total" in metrics.render()
    True
    >>> metrics.close()
"""

from runtime.observability._admin import AdminServer, start_admin_server
from runtime.observability._audit import (
    AppendLog,
    AuditRecord,
    AuditSink,
    AuditWriteError,
    FileAuditSink,
    StoreAuditSink,
    audit_files,
    bounded,
    open_audit_sink,
    outcome_of,
    read_audit_file,
)
from runtime.observability._logging import (
    MODULE_ATTR,
    ConsoleFormatter,
    JsonFormatter,
    configure_logging,
    handler_var,
    log_context,
    request_id_var,
    version_var,
    wants_console,
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
from runtime.observability._spans import (
    HANDLER_ATTRIBUTE,
    REQUEST_ID_ATTRIBUTE,
    VERSION_ATTRIBUTE,
    ClientTracer,
    ServerTracer,
)
from runtime.observability._tracing import OTLP_PACKAGE, configure_tracing

__all__ = [
    "HANDLER_ATTRIBUTE",
    "MODULE_ATTR",
    "OTLP_PACKAGE",
    "REQUEST_ID_ATTRIBUTE",
    "SECONDS_BUCKETS",
    "VERSION_ATTRIBUTE",
    "AdminServer",
    "AppendLog",
    "Attributes",
    "AuditRecord",
    "AuditSink",
    "AuditWriteError",
    "ClientTracer",
    "ConsoleFormatter",
    "Counter",
    "FileAuditSink",
    "Gauge",
    "Histogram",
    "JsonFormatter",
    "Metrics",
    "RedMetrics",
    "ServerTracer",
    "StoreAuditSink",
    "audit_files",
    "bounded",
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
    "wants_console",
]
