"""Tracing without interceptors: ModuleClient's client spans and handlers' own server spans."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from runtime.client import InstancePool, ModuleClient
from runtime.errors import NotFound
from runtime.observability import (
    HANDLER_ATTRIBUTE,
    REQUEST_ID_ATTRIBUTE,
    VERSION_ATTRIBUTE,
    ClientTracer,
    ServerTracer,
)
from tests.traced import abort, traced_handler

HANDLERS = {"/t.S/Echo": "t.Echo", "/t.S/Missing": "t.Missing", "/t.S/Hang": "t.Hang"}


class Setup:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.seen: list[dict[str, str | bytes]] = []
        self.hanging = asyncio.Event()

    async def start(self) -> None:
        async def echo(request: bytes, headers: dict[str, str]) -> bytes:
            self.seen.append(dict(headers))
            return request

        async def missing(request: bytes, headers: dict[str, str]) -> bytes:
            raise abort(grpc.StatusCode.NOT_FOUND, "nothing here")

        async def hang(request: bytes, headers: dict[str, str]) -> bytes:
            self.hanging.set()
            await asyncio.sleep(30)
            return b""

        tracer = ServerTracer(self.provider, handler_of=HANDLERS.get)
        handlers = {
            "Echo": traced_handler(tracer, "/t.S/Echo", echo),
            "Missing": traced_handler(tracer, "/t.S/Missing", missing),
            "Hang": traced_handler(tracer, "/t.S/Hang", hang),
        }
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", handlers),))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        await self.server.start()
        pool = InstancePool()
        pool.update("t", [self.address])
        self.client = ModuleClient(pool, tracing=ClientTracer(self.provider, handler_of=HANDLERS.get))

    async def spans(self, count: int) -> dict[SpanKind, ReadableSpan]:
        for _ in range(500):
            if len(self.exporter.get_finished_spans()) >= count:
                break
            await asyncio.sleep(0.002)
        return {span.kind: span for span in self.exporter.get_finished_spans()}


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    s = Setup()
    await s.start()
    yield s
    await s.client.close()
    await s.server.stop(None)


async def test_the_inline_client_span_is_the_parent_of_the_server_span_and_both_carry_the_ids(setup: Setup) -> None:
    metadata = [("x-request-id", "r-7"), ("x-api-version", "2025-06-01")]
    await setup.client.call("t", "/t.S/Echo", b"x", metadata=metadata)
    spans = await setup.spans(2)
    client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    assert client.name == "t.S/Echo"
    for span in (client, server):
        assert span.attributes is not None
        assert span.attributes[REQUEST_ID_ATTRIBUTE] == "r-7"
        assert span.attributes[VERSION_ATTRIBUTE] == "2025-06-01"
        assert span.attributes[HANDLER_ATTRIBUTE] == "t.Echo"
    assert client.context is not None and server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert client.attributes is not None and client.attributes["rpc.grpc.status_code"] == 0


async def test_a_copied_traceparent_is_replaced_by_the_client_spans_own(setup: Setup) -> None:
    stale = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await setup.client.call("t", "/t.S/Echo", b"", metadata=[("traceparent", stale)])
    client = (await setup.spans(2))[SpanKind.CLIENT]
    assert client.context is not None
    sent = setup.seen[0]["traceparent"]
    assert sent != stale
    assert isinstance(sent, str)
    assert sent.startswith(f"00-{client.context.trace_id:032x}-{client.context.span_id:016x}-")


async def test_the_client_span_continues_the_callers_current_trace(setup: Setup) -> None:
    with setup.provider.get_tracer("test").start_as_current_span("outer") as outer:
        await setup.client.call("t", "/t.S/Echo", b"")
    client = (await setup.spans(3))[SpanKind.CLIENT]
    assert client.parent is not None and client.parent.span_id == outer.get_span_context().span_id


async def test_a_failed_call_marks_the_client_span_with_its_status(setup: Setup) -> None:
    with pytest.raises(NotFound):
        await setup.client.call("t", "/t.S/Missing", b"")
    client = (await setup.spans(2))[SpanKind.CLIENT]
    assert client.status.status_code == StatusCode.ERROR
    assert client.status.description == "NOT_FOUND: nothing here"
    assert client.attributes is not None and client.attributes["rpc.grpc.status_code"] == 5


async def test_a_cancelled_call_ends_its_client_span_without_an_error(setup: Setup) -> None:
    task = asyncio.create_task(setup.client.call("t", "/t.S/Hang", b""))
    await asyncio.wait_for(setup.hanging.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    client = (await setup.spans(1))[SpanKind.CLIENT]
    assert client.end_time is not None
    assert client.status.status_code == StatusCode.UNSET


def test_a_server_span_opened_by_the_handler_continues_the_callers_trace_and_is_current() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = ServerTracer(provider, handler_of=HANDLERS.get)
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    carrier = {"traceparent": caller, "x-request-id": "from-caller", "x-api-version": "stable"}
    span, token = tracer.start("/t.S/Echo", carrier, {REQUEST_ID_ATTRIBUTE: "in-force"})
    assert trace.get_current_span() is span
    span.set_attribute(VERSION_ATTRIBUTE, "2025-06-01")
    ServerTracer.end(span, token, grpc.StatusCode.NOT_FOUND, "no such thing")
    assert trace.get_current_span() is not span
    (finished,) = exporter.get_finished_spans()
    assert finished.kind == SpanKind.SERVER and finished.name == "t.S/Echo"
    assert finished.context is not None and finished.parent is not None
    assert finished.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert finished.parent.span_id == 0xB7AD6B7169203331
    assert finished.attributes is not None
    assert finished.attributes[REQUEST_ID_ATTRIBUTE] == "in-force"
    assert finished.attributes[VERSION_ATTRIBUTE] == "2025-06-01"
    assert finished.attributes[HANDLER_ATTRIBUTE] == "t.Echo"
    assert finished.status.status_code == StatusCode.ERROR
    assert finished.status.description == "NOT_FOUND: no such thing"


def test_a_cancelled_server_span_ends_without_a_status() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = ServerTracer(provider)
    span, token = tracer.start("/t.S/Echo", {})
    ServerTracer.end(span, token, None)
    (finished,) = exporter.get_finished_spans()
    assert finished.status.status_code == StatusCode.UNSET
    assert finished.attributes is not None and "rpc.grpc.status_code" not in finished.attributes


# -- no tracer provider installed: no spans, the caller's trace context passed on as it came ------

CALLER_TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def no_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process as ``modrpc`` runs it without an OTLP endpoint: the API's proxy provider only."""
    proxy = trace.ProxyTracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: proxy)


@pytest.mark.usefixtures("no_provider")
def test_without_a_provider_the_callers_trace_context_travels_on_unchanged() -> None:
    server, client = ServerTracer(), ClientTracer()
    carrier = {"traceparent": CALLER_TRACE, "tracestate": "vendor=1", "x-request-id": "r-1"}
    span, token = server.start("/t.S/Echo", carrier, {REQUEST_ID_ATTRIBUTE: "r-1"})
    assert not span.is_recording()
    # A traceparent copied in by the caller's code is replaced by the inbound one.
    sent_span, metadata = client.start("/t.S/Echo", [("x-request-id", "r-1"), ("traceparent", "00-stale")])
    client.finish(sent_span, grpc.StatusCode.OK, None)
    ServerTracer.end(span, token, grpc.StatusCode.OK)
    assert metadata == (("x-request-id", "r-1"), ("traceparent", CALLER_TRACE), ("tracestate", "vendor=1"))
    # Outside the served call there is no inbound context left to pass on.
    assert client.start("/t.S/Echo", [("x-request-id", "r-2")])[1] == (("x-request-id", "r-2"),)


@pytest.mark.usefixtures("no_provider")
def test_without_a_provider_a_call_that_had_no_trace_context_sends_none() -> None:
    server, client = ServerTracer(), ClientTracer()
    span, token = server.start("/t.S/Echo", {"x-request-id": "r-1"})
    try:
        assert client.start("/t.S/Echo", [("x-request-id", "r-1")])[1] == (("x-request-id", "r-1"),)
    finally:
        ServerTracer.end(span, token, None)


@pytest.mark.usefixtures("no_provider")
def test_a_provider_given_explicitly_still_records_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span, token = ServerTracer(provider).start("/t.S/Echo", {"traceparent": CALLER_TRACE})
    ServerTracer.end(span, token, grpc.StatusCode.OK)
    (finished,) = exporter.get_finished_spans()
    assert finished.context is not None and format(finished.context.trace_id, "032x") == CALLER_TRACE[3:35]


@pytest.mark.usefixtures("no_provider")
def test_without_a_provider_a_malformed_traceparent_is_not_passed_on() -> None:
    server, client = ServerTracer(), ClientTracer()
    for bad in ("00-stale", CALLER_TRACE.upper(), CALLER_TRACE + "-extra", "ff" + CALLER_TRACE[2:]):
        span, token = server.start("/t.S/Echo", {"traceparent": bad, "tracestate": "vendor=1"})
        try:
            assert client.start("/t.S/Echo", [("x-request-id", "r-1")])[1] == (("x-request-id", "r-1"),), bad
        finally:
            ServerTracer.end(span, token, grpc.StatusCode.OK)


def test_a_no_op_tracer_provider_serves_calls_without_a_trace_context() -> None:
    """A no-op tracer hands out the API's INVALID_SPAN; ending it must not be taken for the
    pass-through path (which would reset a context token it never set)."""
    tracer = ServerTracer(trace.NoOpTracerProvider())
    span, token = tracer.start("/t.S/Echo", {"x-request-id": "r-1"})
    ServerTracer.end(span, token, grpc.StatusCode.OK)
    span, token = tracer.start("/t.S/Echo", {"traceparent": CALLER_TRACE})
    ServerTracer.end(span, token, None)
