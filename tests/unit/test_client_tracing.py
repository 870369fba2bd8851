"""Tracing interceptors over a real socket: context propagation and the handler kinds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from runtime.client import (
    HANDLER_ATTRIBUTE,
    ChannelPool,
    ModuleClient,
    client_interceptors,
    default_handler_id,
    server_interceptors,
)
from runtime.errors import Unimplemented


class Setup:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.interceptors = server_interceptors(self.provider)

    async def start(self) -> None:
        def sync_echo(request: bytes, context: grpc.ServicerContext) -> bytes:
            return b"sync:" + request

        async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:  # type: ignore[type-arg]
            for index in range(3):
                yield bytes([index])

        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
            return request

        handlers = {
            "SyncEcho": grpc.unary_unary_rpc_method_handler(sync_echo),
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        }
        self.server = grpc.aio.server(
            migration_thread_pool=ThreadPoolExecutor(max_workers=2), interceptors=self.interceptors
        )
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", handlers),))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        await self.server.start()
        pool = ChannelPool(interceptors=client_interceptors(self.provider))
        pool.update("t", [self.address])
        self.client = ModuleClient(pool)

    async def spans(self, count: int) -> tuple[ReadableSpan, ...]:
        for _ in range(500):
            if len(self.exporter.get_finished_spans()) >= count:
                break
            await asyncio.sleep(0.002)
        return self.exporter.get_finished_spans()


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    s = Setup()
    await s.start()
    yield s
    await s.client.close()
    await s.server.stop(None)


async def test_a_plain_function_handler_gets_a_server_span(setup: Setup) -> None:
    body, _ = await setup.client.call_raw("t", "/t.S/SyncEcho", b"x", metadata=[("x-request-id", "r-9")])
    assert body == b"sync:x"
    spans = {span.kind: span for span in await setup.spans(2)}
    server = spans[SpanKind.SERVER]
    assert server.attributes is not None and server.attributes["modrpc.request_id"] == "r-9"
    assert server.parent is not None and spans[SpanKind.CLIENT].context is not None
    assert server.parent.span_id == spans[SpanKind.CLIENT].context.span_id


async def test_the_client_span_continues_the_callers_current_trace(setup: Setup) -> None:
    tracer = setup.provider.get_tracer("test")
    with tracer.start_as_current_span("gateway.request") as outer:
        await setup.client.call_raw("t", "/t.S/Echo", b"")
    spans = {span.kind: span for span in await setup.spans(3)}
    client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    trace_id = outer.get_span_context().trace_id
    assert client.context is not None and server.context is not None
    assert client.context.trace_id == server.context.trace_id == trace_id
    assert client.parent is not None and client.parent.span_id == outer.get_span_context().span_id


async def test_without_a_handler_table_the_handler_id_is_the_method_path(setup: Setup) -> None:
    await setup.client.call_raw("t", "/t.S/Echo", b"")
    for span in await setup.spans(2):
        assert span.attributes is not None and span.attributes[HANDLER_ATTRIBUTE] == "t.S/Echo"
    assert default_handler_id("/pkg.Svc/Do") == "pkg.Svc/Do"


async def test_streaming_responses_pass_through_the_server_interceptor(setup: Setup) -> None:
    channel = grpc.aio.insecure_channel(setup.address)
    try:
        call = channel.unary_stream("/t.S/Stream", request_serializer=None, response_deserializer=None)
        received = [item async for item in call(b"")]
    finally:
        await channel.close()
    assert received == [b"\x00", b"\x01", b"\x02"]
    assert all(span.kind != SpanKind.SERVER for span in setup.exporter.get_finished_spans())


async def test_an_unknown_method_is_still_unimplemented_through_the_interceptors(setup: Setup) -> None:
    with pytest.raises(Unimplemented):
        await setup.client.call_raw("t", "/t.S/Nope", b"")


async def test_the_server_interceptor_wraps_each_method_once(setup: Setup) -> None:
    for _ in range(3):
        await setup.client.call_raw("t", "/t.S/Echo", b"")
    interceptor = setup.interceptors[0]
    wrapped = interceptor._wrapped["/t.S/Echo"]
    await setup.client.call_raw("t", "/t.S/Echo", b"")
    assert interceptor._wrapped["/t.S/Echo"] is wrapped


async def test_a_traceparent_copied_in_by_the_caller_is_replaced_by_the_client_span(setup: Setup) -> None:
    stale = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await setup.client.call_raw("t", "/t.S/Echo", b"", metadata=[("traceparent", stale)])
    spans = {span.kind: span for span in await setup.spans(2)}
    client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    assert client.context is not None and server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert client.context.trace_id != int("0af7651916cd43dd8448eb211c80319c", 16)
