"""Property 22 in-process: a real grpc.aio server and module client, traced into memory."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import grpc.aio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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

HANDLERS = {"/users.v1.Users/GetUser": "users.get_user", "/users.v1.Users/Fail": "users.fail"}

request_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)
versions = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.builds(lambda s, n: f"tsv:{s}-users-{n}", st.integers(0, 2**33), st.integers(0, 999)),
)


class Traced:
    """A server and a client sharing one in-memory tracer provider, run on one event loop."""

    def __init__(self, runner: asyncio.Runner) -> None:
        self.runner = runner
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.provider = provider
        self.server_seen: list[str] = []

    async def _get_user(self, request: bytes, headers: dict[str, str]) -> bytes:
        return b"user:" + request

    async def _fail(self, request: bytes, headers: dict[str, str]) -> bytes:
        raise abort(grpc.StatusCode.NOT_FOUND, "no such user")

    async def start(self) -> None:
        self.server = grpc.aio.server()
        tracer = ServerTracer(self.provider, handler_of=HANDLERS.get)
        handlers = {
            "GetUser": traced_handler(tracer, "/users.v1.Users/GetUser", self._get_user),
            "Fail": traced_handler(tracer, "/users.v1.Users/Fail", self._fail),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("users.v1.Users", handlers),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        pool = InstancePool()
        pool.update("users", [f"127.0.0.1:{port}"])
        self.client = ModuleClient(pool, tracing=ClientTracer(self.provider, handler_of=HANDLERS.get))

    def finished_spans(self, count: int = 2) -> tuple[ReadableSpan, ...]:
        """The finished spans, once there are ``count``: a server span that failed with
        ``abort`` ends just after the status is sent, so it may finish after the client returns.
        """
        for _ in range(500):
            spans = self.exporter.get_finished_spans()
            if len(spans) >= count:
                return spans
            self.runner.run(asyncio.sleep(0.002))
        return self.exporter.get_finished_spans()

    async def stop(self) -> None:
        await self.client.close()
        await self.server.stop(None)


@pytest.fixture
def traced() -> Iterator[Traced]:
    with asyncio.Runner() as runner:
        setup = Traced(runner)
        runner.run(setup.start())
        try:
            yield setup
        finally:
            runner.run(setup.stop())


def test_spans_carry_request_id_handler_id_and_version(traced: Traced) -> None:
    """Property 22: Spans carry the request id, handler id and version.

    For random request ids and versions, one call gives one client and one server span, both
    tagged with all three, the server span a child of the client span in the same trace.
    """

    @settings(max_examples=100, deadline=None)
    @given(request_id=request_ids, version=versions, payload=st.binary(max_size=64))
    def check(request_id: str, version: str, payload: bytes) -> None:
        traced.exporter.clear()
        metadata = [("x-request-id", request_id), ("x-api-version", version)]
        body, _ = traced.runner.run(
            traced.client.call("users", "/users.v1.Users/GetUser", payload, metadata=metadata)
        )
        assert body == b"user:" + payload
        spans = {span.kind: span for span in traced.finished_spans()}
        assert set(spans) == {SpanKind.CLIENT, SpanKind.SERVER}
        for span in spans.values():
            assert span.attributes is not None
            assert span.attributes[REQUEST_ID_ATTRIBUTE] == request_id
            assert span.attributes[HANDLER_ATTRIBUTE] == "users.get_user"
            assert span.attributes[VERSION_ATTRIBUTE] == version
        client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
        assert client.context is not None and server.context is not None and server.parent is not None
        assert server.context.trace_id == client.context.trace_id
        assert server.parent.span_id == client.context.span_id

    check()


def test_a_failed_call_still_gets_tagged_spans_marked_as_errors(traced: Traced) -> None:
    """Property 22: Spans carry the request id, handler id and version (failures included)."""

    @settings(max_examples=100, deadline=None)
    @given(request_id=request_ids, version=versions)
    def check(request_id: str, version: str) -> None:
        traced.exporter.clear()
        metadata = [("x-request-id", request_id), ("x-api-version", version)]
        with pytest.raises(NotFound):
            traced.runner.run(traced.client.call("users", "/users.v1.Users/Fail", b"", metadata=metadata))
        spans = traced.finished_spans()
        assert {span.kind for span in spans} == {SpanKind.CLIENT, SpanKind.SERVER}
        for span in spans:
            assert span.attributes is not None
            assert span.attributes[REQUEST_ID_ATTRIBUTE] == request_id
            assert span.attributes[HANDLER_ATTRIBUTE] == "users.fail"
            assert span.attributes[VERSION_ATTRIBUTE] == version
            assert span.status.status_code == StatusCode.ERROR

    check()
