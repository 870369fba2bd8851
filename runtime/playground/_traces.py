"""Traces: one request's timeline, from the gateway's spans and the workers' audit records.

Two sources, joined by request id:

- the gateway's spans, kept in this process by a :class:`~runtime.observability.TraceRing`: the
  server span of the call with one event per ingress step (authentication, version resolution,
  roles, rate limit, plan), the spans of transformer hops, and the client span of the call to
  the worker;
- the workers' audit records, read by an :class:`~runtime.observability.AuditTail`: each one is
  a lifecycle with its events and their durations (hooks, validation, handler, module calls,
  publishes, compensations, cleanup). A module call carries the request id on, so the callee's
  record has the same id and is attached under the call that made it.

Nothing is collected from the workers' processes but what they append to the audit trail
anyway: no port is opened and no call pays for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from runtime.observability import STEP_EVENT, SpanRecord

__all__ = ["recent", "timeline"]

_SPANS_OF = {"SERVER": "gateway", "CLIENT": "call", "INTERNAL": "transform"}
_EVENT_ROWS = {
    "hook_end": "hook",
    "hook_error": "hook",
    "handler_end": "handler",
    "handler_error": "handler",
    "module_call": "module_call",
    "publish": "publish",
    "compensation": "compensation",
    "compensation_error": "compensation",
    "cleanup": "cleanup",
    "validation_error": "validation",
    "alert": "alert",
}


def _ms(ns: int) -> float:
    return ns / 1e6


def recent(roots: Sequence[SpanRecord], records: Sequence[Mapping[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The newest requests, newest first: gateway calls, and worker calls seen only in audit."""
    rows: dict[str, dict[str, Any]] = {}
    for span in roots:
        request_id = span.request_id
        if request_id is None or request_id in rows:
            continue
        rows[request_id] = {
            "request_id": request_id,
            "method": "/" + span.name,
            "version": span.attributes.get("modrpc.version"),
            "status": _span_code(span),
            "duration_ms": round(span.duration_ms, 3),
            "at": span.start_ns / 1e9,
            "source": "gateway",
        }
    for record in records:
        request_id = str(record.get("request_id", ""))
        if not request_id or request_id in rows:
            continue
        rows[request_id] = {
            "request_id": request_id,
            "method": record.get("method"),
            "version": record.get("version"),
            "status": "OK" if record.get("outcome") == "ok" else record.get("outcome"),
            "duration_ms": round(float(record.get("duration_ms") or 0.0), 3),
            "at": float(record.get("started_at") or 0.0),
            "source": "worker",
        }
    return sorted(rows.values(), key=lambda r: r["at"], reverse=True)[:limit]


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _span_code(span: SpanRecord) -> str:
    """The gRPC status name a span ended with (``OK`` for spans that are not calls)."""
    if span.status == "ERROR":
        return span.status_message.split(":", 1)[0] or "ERROR"
    code = span.attributes.get("rpc.grpc.status_code")
    return _CODE_NAMES.get(code, str(code)) if isinstance(code, int) else "OK"


def timeline(request_id: str, spans: Sequence[SpanRecord], records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The rows of one request's timeline, in start order, nested by ``parent`` ids.

    Times are milliseconds from the first thing seen of the request. Each row: ``id``,
    ``parent``, ``kind``, ``label``, ``start_ms``, ``duration_ms``, ``status``, ``error``,
    ``detail``.
    """
    rows: list[dict[str, Any]] = []
    starts = [s.start_ns / 1e9 for s in spans] + [float(r.get("started_at") or 0) for r in records if r.get("started_at")]
    if not starts:
        return {"request_id": request_id, "rows": [], "found": False, "complete": False}
    origin = min(starts)

    def at(seconds: float) -> float:
        return round((seconds - origin) * 1000, 3)

    by_span: dict[str, str] = {}
    client_rows: list[dict[str, Any]] = []
    for span in spans:
        row_id = f"span-{span.span_id}"
        by_span[span.span_id] = row_id
        kind = _SPANS_OF.get(span.kind, "span")
        row = {
            "id": row_id,
            "parent": by_span.get(span.parent_id or "") if span.parent_id else None,
            "kind": kind,
            "label": _span_label(span, kind),
            "start_ms": at(span.start_ns / 1e9),
            "duration_ms": round(span.duration_ms, 3),
            "status": _span_code(span),
            "error": span.status_message or None,
            "detail": {k: v for k, v in span.attributes.items() if k.startswith(("modrpc.", "rpc."))},
            "service": span.service,
        }
        rows.append(row)
        if kind == "call":
            client_rows.append(row)
        previous = span.start_ns
        for event in span.events:
            if event.name != STEP_EVENT:
                continue
            step = _words(str(event.attributes.get("step", "step")))
            rows.append(
                {
                    "id": f"{row_id}-{step}",
                    "parent": row_id,
                    "kind": "step",
                    "label": step + (f" → {event.attributes['value']}" if "value" in event.attributes else ""),
                    "start_ms": at(previous / 1e9),
                    "duration_ms": round(_ms(event.time_ns - previous), 3),
                    "status": "OK",
                    "error": None,
                    "detail": dict(event.attributes),
                }
            )
            previous = event.time_ns
    _worker_rows(request_id, records, rows, client_rows, at)
    rows.sort(key=lambda r: (r["start_ms"], -r["duration_ms"]))
    complete = bool(records) or not any(r["kind"] == "call" for r in rows)
    return {"request_id": request_id, "rows": rows, "found": True, "complete": complete}


def _words(name: str) -> str:
    """A step's class name as words: ``ResolveVersion`` → ``resolve version``."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower().split()
    return " ".join(w for w in words if w != "step") or name


def _span_label(span: SpanRecord, kind: str) -> str:
    if kind == "gateway":
        return f"gateway {span.name}"
    if kind == "call":
        return f"call worker {span.name}"
    return span.name


def _worker_rows(
    request_id: str,
    records: Sequence[Mapping[str, Any]],
    rows: list[dict[str, Any]],
    client_rows: list[dict[str, Any]],
    at: Any,
) -> None:
    """A row per audit record (a worker's lifecycle) and per step in it, attached to its caller."""
    ordered = sorted(records, key=lambda r: float(r.get("started_at") or 0))
    # Module calls seen so far, per handler id called, waiting for the callee's lifecycle.
    waiting: dict[str, list[str]] = {}
    lifecycle_rows: list[dict[str, Any]] = []
    for index, record in enumerate(ordered):
        handler = _handler_of(record)
        row_id = f"worker-{index}"
        row = {
            "id": row_id,
            "parent": None,
            "kind": "lifecycle",
            "label": f"worker {handler} @ {record.get('version')}",
            "start_ms": at(float(record.get("started_at") or 0)),
            "duration_ms": round(float(record.get("duration_ms") or 0), 3),
            "status": "OK" if record.get("outcome") == "ok" else str(record.get("outcome")),
            "error": None,
            "detail": {"handler": handler, "principal": record.get("principal"), "manifest_hash": record.get("manifest_hash")},
            "handler": handler,
        }
        rows.append(row)
        lifecycle_rows.append(row)
        for number, event in enumerate(record.get("events") or ()):
            kind = _EVENT_ROWS.get(str(event.get("kind")))
            if kind is None:
                if event.get("kind") == "lifecycle_end" and event.get("error"):
                    row["error"] = event.get("error")
                continue
            duration = float(event.get("duration_ms") or 0)
            end = float(event.get("at") or 0)
            event_row = {
                "id": f"{row_id}-{number}",
                "parent": row_id,
                "kind": kind,
                "label": _event_label(kind, str(event.get("name"))),
                "start_ms": at(end - duration / 1000),
                "duration_ms": round(duration, 3),
                "status": "ERROR" if event.get("error") or str(event.get("kind")).endswith("_error") else "OK",
                "error": event.get("error"),
                "detail": {"event": event.get("kind"), "name": event.get("name")},
            }
            if kind == "module_call":
                event_row["target"] = {"request_id": request_id, "handler": event.get("name")}
                waiting.setdefault(str(event.get("name")), []).append(event_row["id"])
            rows.append(event_row)
    # Callee lifecycles hang under the module call that made them (the n-th call to a handler
    # made the n-th lifecycle of it); the first lifecycle hangs under the gateway's worker call.
    for row in lifecycle_rows:
        calls = waiting.get(str(row["handler"]))
        if calls:
            row["parent"] = calls.pop(0)
        elif client_rows:
            row["parent"] = client_rows[0]["id"]


def _handler_of(record: Mapping[str, Any]) -> str:
    events = record.get("events") or ()
    for event in events:
        if event.get("handler"):
            return str(event["handler"])
    method = str(record.get("method", ""))
    service, _, name = method.strip("/").partition("/")
    return f"{service.split('.')[0]}.{name}" if name else method


def _event_label(kind: str, name: str) -> str:
    return {
        "hook": f"hook {name}",
        "handler": f"handler {name}",
        "module_call": f"→ {name}",
        "publish": f"publish {name}",
        "compensation": f"undo {name}",
        "cleanup": f"cleanup {name}",
        "validation": f"validation of the {name} failed",
        "alert": f"alert {name}",
    }.get(kind, name)
