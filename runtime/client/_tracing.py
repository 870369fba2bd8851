"""OpenTelemetry interceptors: one span per call on each side, tagged with modrpc's own ids.

Every span carries ``modrpc.request_id`` (from ``x-request-id``), ``modrpc.handler`` (the handler
id of the method called) and ``modrpc.version`` (from ``x-api-version``), which is what lets one
search find every hop of one request at one version. Trace context crosses the wire as W3C
``traceparent``/``tracestate`` metadata, so a worker's span is a child of the gateway's.

These are written here rather than taken from opentelemetry-instrumentation-grpc because its
aio interceptors have no hook that sees call metadata, and the ids live in the metadata.
Only calls with a unary response are traced (the runtime's calls are all unary); streaming
responses pass through untouched.

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> interceptors = client_interceptors(TracerProvider())  # build once, give to ChannelPool
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "HANDLER_ATTRIBUTE",
    "REQUEST_ID_ATTRIBUTE",
    "VERSION_ATTRIBUTE",
    "HandlerOf",
    "client_interceptors",
    "default_handler_id",
    "server_interceptors",
]

REQUEST_ID_ATTRIBUTE = "modrpc.request_id"
HANDLER_ATTRIBUTE = "modrpc.handler"
VERSION_ATTRIBUTE = "modrpc.version"

_REQUEST_ID_KEY = "x-request-id"
_VERSION_KEY = "x-api-version"
_INSTRUMENTATION = "modrpc"

if TYPE_CHECKING:  # grpc-stubs makes these generic; grpc itself does not
    _Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    _Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    _ClientInterceptor: TypeAlias = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _ServerInterceptor: TypeAlias = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Handler = grpc.RpcMethodHandler
    _Context = grpc.aio.ServicerContext
    _ClientInterceptor = grpc.aio.UnaryUnaryClientInterceptor
    _ServerInterceptor = grpc.aio.ServerInterceptor

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
    for key, value in metadata:
        if not isinstance(value, str):
            continue
        if key == _REQUEST_ID_KEY:
            attributes[REQUEST_ID_ATTRIBUTE] = value
        elif key == _VERSION_KEY:
            attributes[VERSION_ATTRIBUTE] = value
    return attributes


def _set_status(span: trace.Span, code: grpc.StatusCode, details: str | None) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details or ''}"))


class _ClientTracing(_ClientInterceptor):
    """Starts the client span, injects ``traceparent`` and ends the span when the call does."""

    def __init__(self, tracer: trace.Tracer, propagator: TextMapPropagator, handler_of: HandlerOf) -> None:
        self._tracer = tracer
        self._propagator = propagator
        self._handler_of = handler_of
        self._fields = frozenset(propagator.fields)

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = client_call_details.method
        method_path = method.decode() if isinstance(method, bytes) else method
        # Trace context is this span's to set: any traceparent the caller copied in is dropped.
        pairs: list[tuple[str, str | bytes]] = [
            (key, value) for key, value in client_call_details.metadata or () if key not in self._fields
        ]
        with self._tracer.start_as_current_span(
            method_path.lstrip("/"), kind=SpanKind.CLIENT, attributes=_attributes(method_path, pairs, self._handler_of)
        ) as span:
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)
            details = grpc.aio.ClientCallDetails(
                client_call_details.method,
                client_call_details.timeout,
                grpc.aio.Metadata(*pairs, *carrier.items()),
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
            call = await continuation(details, request)
            try:
                code = await call.code()  # waits for the end of the call without raising
            except asyncio.CancelledError:
                call.cancel()  # the caller gave up: so does the RPC, and the server sees it
                raise
            _set_status(span, code, await call.details())
            return call


def client_interceptors(
    tracer_provider: TracerProvider | None = None,
    *,
    handler_of: HandlerOf = default_handler_id,
    propagator: TextMapPropagator | None = None,
) -> list[_ClientInterceptor]:
    """The client-side interceptors, built once and handed to :class:`ChannelPool`.

    ``tracer_provider`` defaults to the global one; tests pass their own.
    """
    provider = tracer_provider or trace.get_tracer_provider()
    tracer = provider.get_tracer(_INSTRUMENTATION)
    return [_ClientTracing(tracer, propagator or TraceContextTextMapPropagator(), handler_of)]


class _ServerTracing(_ServerInterceptor):
    """Wraps each unary-response handler in a server span that continues the caller's trace."""

    def __init__(self, tracer: trace.Tracer, propagator: TextMapPropagator, handler_of: HandlerOf) -> None:
        self._tracer = tracer
        self._propagator = propagator
        self._handler_of = handler_of
        # method path -> (handler as given, handler wrapped); bounded by the methods served.
        self._wrapped: dict[str, tuple[_Handler, _Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        # grpc-stubs says a handler always comes back; grpc returns None for an unknown method.
        handler: _Handler | None = await continuation(handler_call_details)
        if handler is None or handler.response_streaming:
            return handler  # type: ignore[return-value]
        method_path: str = handler_call_details.method
        cached = self._wrapped.get(method_path)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method_path, handler)
        self._wrapped[method_path] = (handler, wrapped)
        return wrapped

    def _span_context(self, method_path: str, context: _Context) -> tuple[Context, dict[str, str]]:
        pairs: list[tuple[str, str | bytes]] = list(context.invocation_metadata() or ())
        carrier: Mapping[str, str] = {key: value for key, value in pairs if isinstance(value, str)}
        return self._propagator.extract(carrier), _attributes(method_path, pairs, self._handler_of)

    def _wrap(self, method_path: str, handler: _Handler) -> _Handler:
        streaming_request = handler.request_streaming
        behavior: Any = handler.stream_unary if streaming_request else handler.unary_unary
        name = method_path.lstrip("/")
        tracer = self._tracer

        async def traced_async(request: Any, context: _Context) -> Any:
            parent, attributes = self._span_context(method_path, context)
            with tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes):
                return await behavior(request, context)

        def traced_sync(request: Any, context: _Context) -> Any:
            # A plain function: grpc runs it on its thread pool, and the span goes with it.
            parent, attributes = self._span_context(method_path, context)
            with tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes):
                return behavior(request, context)

        factory = grpc.stream_unary_rpc_method_handler if streaming_request else grpc.unary_unary_rpc_method_handler
        return factory(
            traced_async if inspect.iscoroutinefunction(behavior) else traced_sync,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def server_interceptors(
    tracer_provider: TracerProvider | None = None,
    *,
    handler_of: HandlerOf = default_handler_id,
    propagator: TextMapPropagator | None = None,
) -> list[_ServerInterceptor]:
    """The server-side interceptors, built once and handed to ``grpc.aio.server(interceptors=...)``."""
    provider = tracer_provider or trace.get_tracer_provider()
    tracer = provider.get_tracer(_INSTRUMENTATION)
    return [_ServerTracing(tracer, propagator or TraceContextTextMapPropagator(), handler_of)]
