"""One contract suite, run against every transport of the call contract: gRPC, the lane, in process.

Each transport carries the same calls to the same endpoint and must be indistinguishable to the
caller: bytes and metadata (``-bin`` values as bytes) both ways, a status with its
``google.rpc`` details, the deadline the endpoint sees, a deadline that passes, cancellation by
the caller, large messages and the message limit. The gRPC and lane cases use real sockets on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio
import pytest

from runtime.deadline import Deadline
from runtime.errors import NotFound
from runtime.lane import LaneClient, LaneServer
from runtime.status import rpc_status_of
from runtime.transport import (
    CallError,
    GrpcTransport,
    InProcessModules,
    Metadata,
    MetadataIn,
    Reply,
    Transport,
    unary_handler,
)

LIMIT = 4 * 1024 * 1024
"""The message limit every transport is built with here (gRPC's own default)."""


@dataclass
class Endpoint:
    """The server side: what a worker's endpoints are, reduced to what the contract carries."""

    seen: list[tuple[str, bytes, Metadata, Deadline | None]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def unary(self, method: str, payload: bytes, metadata: MetadataIn, deadline: Deadline | None) -> Reply:
        self.seen.append((method, payload, tuple(metadata), deadline))
        name = method.rpartition("/")[2]
        if name == "Echo":
            return payload, (("x-request-id", "r-echo"), ("x-echo-bin", b"\x00\xff" + payload[:8]))
        if name == "Missing":
            raise CallError(rpc_status_of(NotFound("no user 42"), "r-missing"))
        if name == "Hang":
            self.started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            return b"", ()
        if name == "Big":
            return b"x" * int(payload), ()
        raise CallError(rpc_status_of(NotFound(f"no method {method}")))


@contextlib.asynccontextmanager
async def grpc_transport(endpoint: Endpoint) -> AsyncIterator[Transport]:
    def handler(path: str) -> grpc.RpcMethodHandler[bytes, bytes]:
        return unary_handler(lambda payload, metadata, deadline: endpoint.unary(path, payload, metadata, deadline))

    methods = {name: handler(f"/t.v1.T/{name}") for name in ("Echo", "Missing", "Hang", "Big")}
    server = grpc.aio.server(
        options=[("grpc.max_send_message_length", LIMIT), ("grpc.max_receive_message_length", LIMIT)]
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.v1.T", methods),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    transport = GrpcTransport(f"127.0.0.1:{port}", max_message_bytes=LIMIT)
    try:
        yield transport
    finally:
        await transport.close(0)
        await server.stop(0)


@contextlib.asynccontextmanager
async def lane_transport(endpoint: Endpoint) -> AsyncIterator[Transport]:
    server = LaneServer(endpoint, host="127.0.0.1", max_message_bytes=LIMIT)
    address = await server.start()
    client = LaneClient(address, max_message_bytes=LIMIT)
    try:
        yield client
    finally:
        await client.close()
        await server.stop(0)


@contextlib.asynccontextmanager
async def in_process_transport(endpoint: Endpoint) -> AsyncIterator[Transport]:
    modules = InProcessModules()
    modules.register("t", endpoint)
    found = modules.lookup("t")
    assert found is not None
    yield found


TRANSPORTS: dict[str, Callable[[Endpoint], contextlib.AbstractAsyncContextManager[Transport]]] = {
    "grpc": grpc_transport,
    "lane": lane_transport,
    "in-process": in_process_transport,
}


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint()


@pytest.fixture(params=sorted(TRANSPORTS))
async def transport(request: pytest.FixtureRequest, endpoint: Endpoint) -> AsyncIterator[Transport]:
    async with TRANSPORTS[request.param](endpoint) as opened:
        yield opened


async def test_bytes_and_metadata_travel_both_ways_unchanged(transport: Transport, endpoint: Endpoint) -> None:
    payload = bytes(range(256))  # not UTF-8, not protobuf: nothing may decode it
    metadata = [("x-request-id", "r-1"), ("x-api-version", "2025-06-01"), ("trace-bin", b"\x01\x02")]
    body, trailers = await transport.unary("/t.v1.T/Echo", payload, metadata, Deadline.after(5))
    assert body == payload
    assert dict(trailers)["x-request-id"] == "r-echo"
    assert dict(trailers)["x-echo-bin"] == b"\x00\xff" + payload[:8]
    method, seen_payload, seen_metadata, _ = endpoint.seen[0]
    assert (method, seen_payload) == ("/t.v1.T/Echo", payload)
    for pair in metadata:
        assert pair in seen_metadata


async def test_a_status_arrives_with_its_code_details_and_google_rpc_details(transport: Transport) -> None:
    expected = rpc_status_of(NotFound("no user 42"), "r-missing")
    with pytest.raises(CallError) as caught:
        await transport.unary("/t.v1.T/Missing", b"", (), Deadline.after(5))
    failed = caught.value
    assert (failed.code, failed.details) == (grpc.StatusCode.NOT_FOUND, "no user 42")
    trailing = dict(failed.trailing_metadata)
    assert trailing["x-request-id"] == "r-missing"
    assert trailing["grpc-status-details-bin"] == dict(expected.trailing_metadata)["grpc-status-details-bin"]


async def test_the_endpoint_sees_the_callers_deadline_and_none_without_one(transport: Transport, endpoint: Endpoint) -> None:
    await transport.unary("/t.v1.T/Echo", b"a", (), Deadline.after(3))
    await transport.unary("/t.v1.T/Echo", b"b", (), None)
    with_deadline, without = endpoint.seen[0][3], endpoint.seen[1][3]
    assert with_deadline is not None and 2.0 < with_deadline.remaining() <= 3.05
    assert without is None


async def test_a_deadline_that_passes_ends_the_call_and_the_endpoints_work(transport: Transport, endpoint: Endpoint) -> None:
    with pytest.raises(CallError) as caught:
        await transport.unary("/t.v1.T/Hang", b"", (), Deadline.after(0.2))
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    async with asyncio.timeout(5):
        await endpoint.cancelled.wait()


async def test_cancelling_the_caller_cancels_the_endpoints_work(transport: Transport, endpoint: Endpoint) -> None:
    call = asyncio.ensure_future(transport.unary("/t.v1.T/Hang", b"", (), Deadline.after(30)))
    async with asyncio.timeout(5):
        await endpoint.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    async with asyncio.timeout(5):
        await endpoint.cancelled.wait()


async def test_large_messages_pass_and_one_past_the_limit_is_resource_exhausted(transport: Transport) -> None:
    big = b"y" * (3 * 1024 * 1024)
    body, _ = await transport.unary("/t.v1.T/Echo", big, (), Deadline.after(10))
    assert body == big
    body, _ = await transport.unary("/t.v1.T/Big", str(3 * 1024 * 1024).encode(), (), Deadline.after(10))
    assert len(body) == 3 * 1024 * 1024


@pytest.mark.parametrize("name", ["grpc", "lane"])
async def test_a_message_past_the_limit_is_resource_exhausted(name: str, endpoint: Endpoint) -> None:
    """In process nothing is framed, so only the wire transports have a size to enforce."""
    async with TRANSPORTS[name](endpoint) as transport:
        with pytest.raises(CallError) as caught:
            await transport.unary("/t.v1.T/Echo", b"z" * (LIMIT + 1024), (), Deadline.after(10))
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(CallError) as answered:
            await transport.unary("/t.v1.T/Big", str(LIMIT + 1024).encode(), (), Deadline.after(10))
        assert answered.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        body, _ = await transport.unary("/t.v1.T/Echo", b"still fine", (), Deadline.after(5))
        assert body == b"still fine"
