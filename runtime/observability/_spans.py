"""Spans of calls: one per call on each side, opened inline and tagged with modrpc's own ids.

Every span carries ``modrpc.request_id`` (from ``x-request-id``), ``modrpc.handler`` (the handler
id of the method called) and ``modrpc.version`` (from ``x-api-version``), which is what lets one
search find every hop of one request at one version. Trace context crosses the wire as W3C
``traceparent``/``tracestate`` metadata, so a worker's span is a child of the gateway's.

The callers open them inline (the module client around each attempt, the gateway's routes and
the worker's endpoints around each call) instead of through grpc.aio interceptors: grpc.aio runs
an interceptor as an extra coroutine with wrapper objects on every call, and the same spans then
cover the lane and in-process calls, which no gRPC interceptor sees.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from typing import Any

import grpc
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from runtime.status import REQUEST_ID_KEY

__all__ = [
    "HANDLER_ATTRIBUTE",
    "REQUEST_ID_ATTRIBUTE",
    "VERSION_ATTRIBUTE",
    "ClientTracer",
    "HandlerOf",
    "ServerTracer",
    "default_handler_id",
]

REQUEST_ID_ATTRIBUTE = "modrpc.request_id"
HANDLER_ATTRIBUTE = "modrpc.handler"
VERSION_ATTRIBUTE = "modrpc.version"

_VERSION_KEY = "x-api-version"
_INSTRUMENTATION = "modrpc"

_TRACE_KEYS = ("traceparent", "tracestate")
_UNTRACED: trace.Span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
"""What :class:`ServerTracer` and :class:`ClientTracer` hand out while nothing records spans.
Its own instance: a no-op tracer hands out ``trace.INVALID_SPAN``, which must not be taken for it."""
_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
"""A W3C ``traceparent`` of version 00 (a later version may add fields after these four)."""
_inbound: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("modrpc_inbound_trace", default=())
"""The caller's W3C trace context, while spans are not recorded: passed on to module calls."""


def _valid_inbound(carrier: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The caller's ``traceparent`` and ``tracestate`` to pass on, or none when the
    ``traceparent`` is malformed (as the W3C propagator would drop them)."""
    parent = carrier.get("traceparent")
    if parent is None:
        return ()
    head = _TRACEPARENT.match(parent)
    if head is None or (len(parent) != 55 and (parent.startswith("00") or parent[55:56] != "-")):
        return ()
    state = carrier.get("tracestate")
    return (("traceparent", parent),) if state is None else (("traceparent", parent), ("tracestate", state))


def _recording(explicit: bool) -> bool:
    """Whether spans are made: a provider was given, or one was installed globally.

    Without either (no OTLP endpoint configured), the API would make non-recording spans that
    only carry the caller's trace context along, at ~20-30 µs per call on each side. The
    tracers then skip the spans and pass the caller's ``traceparent``/``tracestate`` on as
    they came, which is what those spans would have sent. Checked per call, so a provider
    installed later (tests, late configuration) takes effect at once.
    """
    if explicit:
        return True
    # The API's own global, read directly: get_tracer_provider() also looks the provider's
    # environment variable up on every call while none is set (~1 µs, three times per call).
    if getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _PROVIDER_FROM_ENV:
        return False
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


_UNKNOWN = object()
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
"""A provider named in the environment is loaded by the API on first use: then always ask it."""

HandlerOf = Callable[[str], str | None]
"""Maps a gRPC method path (``/pkg.Service/Method``) to a handler id (``module.method``)."""


def default_handler_id(method_path: str) -> str:
    """Without a handler table, the method path itself (``pkg.Service/Method``) is the id."""
    return method_path.lstrip("/")


def _attributes(method_path: str, metadata: Iterable[tuple[str, str | bytes]], handler_of: HandlerOf) -> dict[str, str]:
    service, _, method = method_path.lstrip("/").partition("/")
    attributes = {
        "rpc.system": "grpc",
        "rpc.service": service,
        "rpc.method": method,
        HANDLER_ATTRIBUTE: handler_of(method_path) or default_handler_id(method_path),
    }
    _tag_ids(attributes, metadata)
    return attributes


def _tag_ids(attributes: dict[str, str], metadata: Iterable[tuple[str, str | bytes]]) -> None:
    """Add the request id and version found in ``metadata`` to ``attributes``."""
    for key, value in metadata:
        if not isinstance(value, str):
            continue
        if key == REQUEST_ID_KEY:
            attributes[REQUEST_ID_ATTRIBUTE] = value
        elif key == _VERSION_KEY:
            attributes[VERSION_ATTRIBUTE] = value


class _MethodAttributes:
    """The attributes of a method path that do not change from call to call, computed once.

    Bounded by the method paths a process calls or serves; ``handler_of`` runs once per path.
    """

    __slots__ = ("_by_path", "_handler_of")

    def __init__(self, handler_of: HandlerOf) -> None:
        self._handler_of = handler_of
        self._by_path: dict[str, tuple[str, dict[str, str]]] = {}

    def of(self, method_path: str) -> tuple[str, dict[str, str]]:
        """The span name and a fresh copy of the path's fixed attributes."""
        cached = self._by_path.get(method_path)
        if cached is None:
            cached = self._by_path[method_path] = (method_path.lstrip("/"), _attributes(method_path, (), self._handler_of))
        return cached[0], dict(cached[1])


def _set_status(span: trace.Span, code: grpc.StatusCode, details: str | None) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details or ''}"))


class _Tracer:
    """What both inline tracers hold: the tracer, the propagator and each path's fixed attributes.

    ``tracer_provider`` defaults to the global one, looked up per call (see :func:`_recording`);
    one given explicitly always records.
    """

    __slots__ = ("_explicit", "_methods", "_propagator", "_tracer")

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        handler_of: HandlerOf = default_handler_id,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        provider = tracer_provider or trace.get_tracer_provider()
        self._explicit = tracer_provider is not None
        self._tracer = provider.get_tracer(_INSTRUMENTATION)
        self._propagator = propagator or TraceContextTextMapPropagator()
        self._methods = _MethodAttributes(handler_of)


class ClientTracer(_Tracer):
    """The client span of one module call, started and ended by the caller: no interceptor.

    The module client opens one around each attempt, whatever transport carries it. The span is
    named after the method, tagged with the request id, handler id and version, is a child of
    the caller's current span, and its trace context replaces any ``traceparent`` the caller
    copied in.

        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> tracer = ClientTracer(TracerProvider())
        >>> span, metadata = tracer.start("/users.v1.UsersService/GetUser", [("x-request-id", "r-1")])
        >>> [key for key, _ in metadata]
        ['x-request-id', 'traceparent']
        >>> tracer.finish(span, grpc.StatusCode.OK, None)
    """

    __slots__ = ("_fields",)

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        handler_of: HandlerOf = default_handler_id,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        super().__init__(tracer_provider, handler_of=handler_of, propagator=propagator)
        self._fields = frozenset(self._propagator.fields) | frozenset(_TRACE_KEYS)

    def start(
        self, method_path: str, metadata: Iterable[tuple[str, str | bytes]] | None
    ) -> tuple[trace.Span, tuple[tuple[str, str | bytes], ...]]:
        """Start the span; returns it and the metadata to send, with this span's trace context."""
        fields = self._fields
        # Trace context is this span's to set: any traceparent the caller copied in is dropped.
        pairs = [(key, value) for key, value in metadata or () if key not in fields]
        if not _recording(self._explicit):
            return _UNTRACED, (*pairs, *_inbound.get())
        name, attributes = self._methods.of(method_path)
        _tag_ids(attributes, pairs)
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(span))
        return span, (*pairs, *carrier.items())

    @staticmethod
    def finish(span: trace.Span, code: grpc.StatusCode, details: str | None) -> None:
        """Record how the call ended and end the span."""
        if span is _UNTRACED:
            return
        _set_status(span, code, details)
        span.end()

    @staticmethod
    def fail(span: trace.Span, exc: BaseException) -> None:
        """End the span of a call that raised instead of ending with a status.

        As OpenTelemetry's own ``use_span`` does, an ``Exception`` is recorded with an error
        status, while a cancellation only ends the span: the caller went away, nothing failed.
        """
        if span is _UNTRACED:
            return
        if isinstance(exc, Exception):
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()


class ServerTracer(_Tracer):
    """The server span of one call, opened by the handler itself: no interceptor.

    What the server interceptor does, for a handler that already reads the call's metadata:
    the span continues the caller's trace (``traceparent`` in ``carrier``), is named after the
    method and tagged with the request id, handler id and version, and is current until
    :meth:`end`, so spans the handler opens (a module client's) are its children.

        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> tracer = ServerTracer(TracerProvider())
        >>> span, token = tracer.start("/users.v1.UsersService/GetUser", {"x-request-id": "r-1"})
        >>> span.attributes["modrpc.request_id"]
        'r-1'
        >>> tracer.end(span, token, grpc.StatusCode.OK)
    """

    __slots__ = ()

    def start(
        self, method_path: str, carrier: Mapping[str, str], attributes: Mapping[str, str] | None = None
    ) -> tuple[trace.Span, Token[Any]]:
        """Start the span and make it current; ``attributes`` override the ones from ``carrier``.

        Returns the span and the token :meth:`end` needs to restore the previous context.
        """
        if not _recording(self._explicit):
            return _UNTRACED, _inbound.set(_valid_inbound(carrier))
        name, tags = self._methods.of(method_path)
        request_id = carrier.get(REQUEST_ID_KEY)
        if request_id is not None:
            tags[REQUEST_ID_ATTRIBUTE] = request_id
        version = carrier.get(_VERSION_KEY)
        if version is not None:
            tags[VERSION_ATTRIBUTE] = version
        if attributes:
            tags.update(attributes)
        parent = self._propagator.extract(carrier)
        span = self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=tags)
        return span, context_api.attach(trace.set_span_in_context(span, parent))

    @staticmethod
    def end(span: trace.Span, token: Token[Any], code: grpc.StatusCode | None, details: str | None = None) -> None:
        """Restore the context and end the span; ``code`` None means the call was cancelled."""
        if span is _UNTRACED:
            _inbound.reset(token)
            return
        context_api.detach(token)
        if code is not None:
            _set_status(span, code, details)
        span.end()
