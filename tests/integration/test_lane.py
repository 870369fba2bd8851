"""The lane over real sockets on 127.0.0.1: a LaneClient calling a LaneServer.

Most tests serve :class:`Endpoint`, a Transport whose behaviour each method path picks; the last
ones serve the real endpoints of a ``probe`` worker, as a worker will.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from runtime.deadline import Deadline
from runtime.errors import InternalError, NotFound
from runtime.identity import Peer
from runtime.lane import PROTOCOL, WHERE_METHOD, LaneClient, LaneServer, parse_where, where_handler
from runtime.lane._frames import (
    HEADER,
    REQUEST,
    RESPONSE,
    Frame,
    FrameReader,
    Oversized,
    decode_status,
    encode_request,
    encode_response,
)
from runtime.status import error_of, rpc_status_of
from runtime.tls import InternalTls
from runtime.transport import CallError
from tests.conftest import PROBE_MODULES_DIR, Dial, StartWorker
from tests.fixtures.worker_modules.probe.handlers import SEEN
from tests.fixtures.worker_modules.probe_client import ProbeClient

Pairs = Sequence[tuple[str, str | bytes]]


class Endpoint:
    """A Transport whose method path says what to do; it records what it saw."""

    def __init__(self) -> None:
        self.seen: list[
            tuple[str, bytes, tuple[tuple[str, str | bytes], ...], Deadline | None]
        ] = []
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()

    async def unary(
        self, method: str, payload: bytes, metadata: Pairs, deadline: Deadline | None
    ) -> tuple[bytes, tuple[tuple[str, str | bytes], ...]]:
        self.seen.append((method, payload, tuple(metadata), deadline))
        if method == "/t.v1.T/Echo":
            await asyncio.sleep(random.choice((0, 0, 0.001)))  # answers come back out of order
            return payload, (("x-echo", payload.decode(errors="replace")),)
        if method == "/t.v1.T/NotFound":
            raise CallError(rpc_status_of(NotFound("no user 42")))
        if method == "/t.v1.T/Bug":
            raise RuntimeError("secret: hunter2 in a stack frame")
        if method == "/t.v1.T/Big":
            return b"x" * int(payload), ()
        if method == "/t.v1.T/Wait":  # until released, or cancelled
            self.started.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            return b"released", ()
        raise CallError(rpc_status_of(NotFound(f"no method {method}")))


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint()


@pytest.fixture
async def server(endpoint: Endpoint) -> AsyncIterator[LaneServer]:
    lane = LaneServer(endpoint, host="127.0.0.1", max_message_bytes=1024)
    await lane.start()
    yield lane
    await lane.stop(0)


@pytest.fixture
async def client(server: LaneServer) -> AsyncIterator[LaneClient]:
    lane = LaneClient(server.address, max_message_bytes=1024, connect_timeout=2.0)
    yield lane
    await lane.close()


async def abort_of(call: Any) -> CallError:
    with pytest.raises(CallError) as caught:
        await call
    return caught.value


# -- answers ---------------------------------------------------------------------------------------


async def test_a_call_carries_payload_metadata_and_deadline_and_returns_the_answer(
    client: LaneClient, endpoint: Endpoint
) -> None:
    metadata = [("x-request-id", "r-1"), ("trace-bin", b"\x00\x01")]
    body, response_metadata = await client.unary("/t.v1.T/Echo", b"hello", metadata, Deadline.after(5))
    assert (body, response_metadata) == (b"hello", (("x-echo", "hello"),))
    method, payload, seen_metadata, deadline = endpoint.seen[0]
    assert (method, payload, seen_metadata) == ("/t.v1.T/Echo", b"hello", tuple(metadata))
    assert deadline is not None and 0 < deadline.remaining() <= 5


async def test_a_call_without_deadline_reaches_the_endpoint_without_one(
    client: LaneClient, endpoint: Endpoint
) -> None:
    assert await client.unary("/t.v1.T/Echo", b"", (), None) == (b"", (("x-echo", ""),))
    assert endpoint.seen[0][3] is None


async def test_an_aborted_call_arrives_with_its_status_and_binary_details_intact(
    client: LaneClient,
) -> None:
    expected = rpc_status_of(NotFound("no user 42"))
    abort = await abort_of(client.unary("/t.v1.T/NotFound", b"", (), None))
    assert (abort.code, abort.details) == (grpc.StatusCode.NOT_FOUND, "no user 42")
    assert abort.trailing_metadata == tuple(expected.trailing_metadata)
    assert isinstance(abort.trailing_metadata[0][1], bytes)
    error = error_of(abort.status)
    assert isinstance(error, NotFound) and error.message == "no user 42"


async def test_an_unexpected_exception_is_internal_and_its_text_stays_in_the_log(
    client: LaneClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="modrpc.lane"):
        abort = await abort_of(client.unary("/t.v1.T/Bug", b"", (), None))
    assert abort.code == grpc.StatusCode.INTERNAL
    assert "hunter2" not in abort.details and "RuntimeError" not in abort.details
    assert "hunter2" in caplog.text
    assert isinstance(error_of(abort.status), InternalError)


async def test_two_hundred_concurrent_calls_on_one_connection_each_get_their_own_answer(
    client: LaneClient, server: LaneServer
) -> None:
    payloads = [f"call-{i}".encode() for i in range(200)]
    answers = await asyncio.gather(
        *(client.unary("/t.v1.T/Echo", p, (), Deadline.after(10)) for p in payloads)
    )
    assert [body for body, _ in answers] == payloads
    assert [md for _, md in answers] == [(("x-echo", p.decode()),) for p in payloads]
    assert server.connections == 1


async def test_concurrent_first_calls_share_one_connection(server: LaneServer) -> None:
    async with LaneClient(server.address) as lane:
        await asyncio.gather(*(lane.unary("/t.v1.T/Echo", b"x", (), None) for _ in range(20)))
        assert server.connections == 1


# -- deadlines and cancellation --------------------------------------------------------------------


async def test_a_deadline_that_passes_first_is_deadline_exceeded_and_cancels_the_server_task(
    client: LaneClient, endpoint: Endpoint
) -> None:
    abort = await abort_of(client.unary("/t.v1.T/Wait", b"", (), Deadline.after(0.05)))
    assert abort.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "/t.v1.T/Wait" in abort.details
    await endpoint.cancelled.wait()  # the CANCEL frame reached the server


async def test_a_deadline_already_passed_fails_without_a_call(
    client: LaneClient, endpoint: Endpoint
) -> None:
    await client.unary("/t.v1.T/Echo", b"", (), None)  # connected
    abort = await abort_of(client.unary("/t.v1.T/Echo", b"", (), Deadline.after(-1)))
    assert abort.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(endpoint.seen) == 1


async def test_a_cancelled_caller_cancels_the_endpoint_and_the_cancellation_propagates(
    client: LaneClient, endpoint: Endpoint
) -> None:
    call = asyncio.ensure_future(client.unary("/t.v1.T/Wait", b"", (), None))
    await endpoint.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await endpoint.cancelled.wait()
    assert await client.unary("/t.v1.T/Echo", b"after", (), None) == (b"after", (("x-echo", "after"),))


# -- sizes -----------------------------------------------------------------------------------------


async def test_an_oversized_request_is_resource_exhausted_and_the_connection_still_works(
    client: LaneClient, server: LaneServer
) -> None:
    """Past the frame cap (1024 + the metadata allowance) the bytes are skipped unread; past the
    message limit alone the frame is read and refused. Either way the next call is answered."""
    path = "/t.v1.T/Echo"  # 12 bytes, after a 12-byte head: a body is 24 bytes plus the payload
    refusals = {
        200_000: "lane request frame of 200024 bytes is larger than the limit of 66560 bytes",
        2_000: "lane request message of 2000 bytes is larger than the limit of 1024 bytes",
    }
    for size, details in refusals.items():
        abort = await abort_of(client.unary(path, b"x" * size, (), None))
        assert (abort.code, abort.details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, details)
        assert await client.unary("/t.v1.T/Echo", b"ok", (), None) == (b"ok", (("x-echo", "ok"),))
    assert server.connections == 1


async def test_an_oversized_response_is_resource_exhausted_at_the_client(
    client: LaneClient,
) -> None:
    abort = await abort_of(client.unary("/t.v1.T/Big", b"2000", (), None))
    assert abort.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "response message of 2000 bytes" in abort.details
    abort = await abort_of(client.unary("/t.v1.T/Big", b"200000", (), None))
    assert "response frame" in abort.details
    assert await client.unary("/t.v1.T/Big", b"10", (), None) == (b"x" * 10, ())


# -- connections -----------------------------------------------------------------------------------


async def test_a_server_stopped_mid_call_fails_the_call_as_unavailable(
    client: LaneClient, server: LaneServer, endpoint: Endpoint
) -> None:
    call = asyncio.ensure_future(client.unary("/t.v1.T/Wait", b"", (), None))
    await endpoint.started.wait()
    await server.stop(0)
    abort = await abort_of(call)
    assert abort.code == grpc.StatusCode.UNAVAILABLE
    assert server.address in abort.details
    assert endpoint.cancelled.is_set()


async def test_a_stopping_server_lets_a_call_in_flight_finish_within_the_grace(
    client: LaneClient, server: LaneServer, endpoint: Endpoint
) -> None:
    call = asyncio.ensure_future(client.unary("/t.v1.T/Wait", b"", (), None))
    await endpoint.started.wait()
    asyncio.get_running_loop().call_soon(endpoint.release.set)
    await server.stop(10)
    assert await call == (b"released", ())


async def test_the_client_reconnects_after_the_server_restarts_on_the_same_port(
    client: LaneClient, server: LaneServer, endpoint: Endpoint
) -> None:
    assert (await client.unary("/t.v1.T/Echo", b"one", (), None))[0] == b"one"
    await server.stop(0)
    _, port = server.address.rsplit(":", 1)
    again = LaneServer(endpoint, host="127.0.0.1", port=int(port), max_message_bytes=1024)
    await again.start()
    try:
        assert (await client.unary("/t.v1.T/Echo", b"two", (), None))[0] == b"two"
    finally:
        await again.stop(0)


async def test_a_refused_connection_is_unavailable_naming_the_address() -> None:
    with socket.socket() as bound:  # bound, never listening: connecting to it is refused
        bound.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{bound.getsockname()[1]}"
        async with LaneClient(address, connect_timeout=2.0) as lane:
            calls = [lane.unary("/t.v1.T/Echo", b"", (), None) for _ in range(3)]
            aborts = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(a, CallError) and a.code == grpc.StatusCode.UNAVAILABLE for a in aborts)
    assert all(address in str(a) for a in aborts)


async def test_a_closed_client_refuses_calls_and_closes_twice(server: LaneServer) -> None:
    lane = LaneClient(server.address)
    await lane.unary("/t.v1.T/Echo", b"", (), None)
    await lane.close()
    await lane.close()
    abort = await abort_of(lane.unary("/t.v1.T/Echo", b"", (), None))
    assert abort.code == grpc.StatusCode.UNAVAILABLE and "closed" in abort.details


def test_an_address_that_is_not_host_and_port_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="not host:port"):
        LaneClient("localhost")


# -- peers that do not speak the lane -------------------------------------------------------------


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[Frame | Oversized]:
    frames: list[Frame | Oversized] = []
    cutter = FrameReader()
    while len(frames) < count:
        data = await reader.read(65536)
        assert data, "the server closed the connection"
        frames += cutter.feed(data)
    return frames


async def test_a_malformed_request_is_internal_and_the_connection_keeps_serving(
    server: LaneServer,
) -> None:
    host, port = server.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(HEADER.pack(3, 1, REQUEST) + b"abc")
        writer.write(encode_request(2, "/t.v1.T/Echo", (), None, b"fine"))
        bad, good = await read_frames(reader, 2)
    finally:
        writer.close()
    assert isinstance(bad, Frame) and isinstance(good, Frame)
    status = decode_status(bad.body)
    assert (bad.stream_id, status.code) == (1, grpc.StatusCode.INTERNAL.value[0])
    assert "malformed lane request" in status.details
    assert (good.stream_id, good.kind) == (2, RESPONSE)


@pytest.mark.parametrize(
    "frame", [HEADER.pack(0, 1, 9), encode_response(1, (), b"a client never answers")]
)
async def test_a_peer_that_does_not_speak_the_lane_is_disconnected(
    server: LaneServer, frame: bytes
) -> None:
    host, port = server.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(frame)
        assert await reader.read() == b""  # end of stream: the server hung up
    finally:
        writer.close()


async def test_a_server_answering_garbage_fails_the_call_as_internal() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(HEADER.pack(0, 1, 200))
        await writer.drain()

    impostor = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = impostor.sockets[0].getsockname()[1]
    try:
        async with LaneClient(f"127.0.0.1:{port}") as lane:
            abort = await abort_of(lane.unary("/t.v1.T/Echo", b"", (), None))
    finally:
        impostor.close()
        await impostor.wait_closed()
    assert abort.code == grpc.StatusCode.INTERNAL
    assert "malformed lane frame" in abort.details and "unknown frame kind 200" in abort.details


# -- the where method ------------------------------------------------------------------------------


async def test_the_where_method_answers_the_lane_address_and_nothing_else(
    server: LaneServer,
) -> None:
    grpc_server = grpc.aio.server()
    grpc_server.add_generic_rpc_handlers((where_handler(lambda: server.address),))
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = await channel.unary_unary(WHERE_METHOD)(b"")
            assert answer == f"{PROTOCOL} {server.address}".encode()
            assert parse_where(answer) == server.address
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/modrpc.lane.v1.Lane/Elsewhere")(b"")
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await grpc_server.stop(0)


# -- a real worker's endpoints ---------------------------------------------------------------------


class Watched:
    """A worker's LocalEndpoints, noting when a call was cancelled inside them."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self.cancelled = asyncio.Event()

    async def unary(
        self, method: str, payload: bytes, metadata: Pairs, deadline: Deadline | None
    ) -> tuple[bytes, tuple[tuple[str, str | bytes], ...]]:
        try:
            return await self._call.unary(method, payload, metadata, deadline)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@pytest.fixture
async def probe_lane(
    start_worker: StartWorker, dial: Dial, tls_dir: Path
) -> AsyncIterator[tuple[Watched, ProbeClient, LaneClient]]:
    worker = await start_worker("probe", modules_dir=PROBE_MODULES_DIR)
    assert worker.service is not None
    watched = Watched(worker.service.transport)
    probe_tls = InternalTls.load(tls_dir, Peer.module("probe"), dev_ca=True)
    lane = LaneServer(watched, host="127.0.0.1", tls=probe_tls)
    address = await lane.start()
    async with dial(worker) as channel:
        gateway_tls = InternalTls.load(tls_dir, Peer.gateway(), dev_ca=True)
        client = LaneClient(address, tls=gateway_tls, server=Peer.module("probe"))
        yield watched, ProbeClient(channel, worker.service.catalog.latest.descriptor), client
        await client.close()
    await lane.stop(0)


async def test_a_worker_module_answers_over_the_lane_as_over_grpc(
    probe_lane: tuple[Watched, ProbeClient, LaneClient],
) -> None:
    _, probe, lane = probe_lane
    body, _ = await lane.unary(
        "/probe.v1.ProbeService/Echo", probe.encode("Echo", {"text": "h\u00e9"}),
        [("x-request-id", "lane-echo-1")], Deadline.after(5),
    )  # fmt: skip
    reply = probe.message("EchoResponse", {}).FromString(body)
    assert (reply.text, reply.request_id) == ("h\u00e9", "lane-echo-1")


async def test_a_worker_failure_over_the_lane_is_internal_without_its_text(
    probe_lane: tuple[Watched, ProbeClient, LaneClient],
) -> None:
    _, probe, lane = probe_lane
    payload = probe.encode("Fail", {"detail": "hunter2"})
    abort = await abort_of(lane.unary("/probe.v1.ProbeService/Fail", payload, [], None))
    assert abort.code == grpc.StatusCode.INTERNAL
    assert "hunter2" not in abort.details and "probe failure" not in abort.details


async def test_a_lane_deadline_cancels_the_worker_handler(
    probe_lane: tuple[Watched, ProbeClient, LaneClient],
) -> None:
    endpoints, probe, lane = probe_lane
    payload = probe.encode("Stall", {"seconds": 20})
    abort = await abort_of(
        lane.unary(
            "/probe.v1.ProbeService/Stall",
            payload,
            [("x-request-id", "lane-stall-1")],
            Deadline.after(0.1),
        )
    )
    assert abort.code == grpc.StatusCode.DEADLINE_EXCEEDED
    await endpoints.cancelled.wait()  # the CANCEL frame reached the worker
    assert "lane-stall-1" in SEEN["cancelled"]  # and the handler itself saw CancelledError


async def test_an_unknown_method_over_the_lane_is_unimplemented(
    probe_lane: tuple[Watched, ProbeClient, LaneClient],
) -> None:
    _, _, lane = probe_lane
    abort = await abort_of(lane.unary("/probe.v1.ProbeService/Nope", b"", [], None))
    assert abort.code == grpc.StatusCode.UNIMPLEMENTED


async def test_a_client_that_stops_reading_stops_being_read_until_it_drains() -> None:
    """Flow control: answers a client does not read never pile up in the server without bound."""
    big = b"x" * (256 * 1024)

    class AnswerBig:
        async def unary(
            self, method_path: str, payload: bytes, metadata: Sequence[tuple[str, str | bytes]], deadline: Deadline | None
        ) -> tuple[bytes, tuple[tuple[str, str | bytes], ...]]:
            return big, ()

    server = LaneServer(AnswerBig(), host="127.0.0.1")
    host, port = (await server.start()).rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), limit=1024)
    try:
        transport = writer.transport
        transport.pause_reading()  # this client reads nothing for now
        for stream_id in range(1, 101):
            writer.write(encode_request(stream_id, "/t.v1.T/Big", (), None, b""))
        await writer.drain()

        def paused() -> bool:
            (connection,) = server._connections
            return connection._transport is not None and not connection._transport.is_reading()

        async with asyncio.timeout(10):
            while not paused():  # noqa: ASYNC110 - the server's reading state has no event
                await asyncio.sleep(0.01)
        transport.resume_reading()
        answered = await read_frames(reader, 100)
        assert sorted(frame.stream_id for frame in answered) == list(range(1, 101))
        assert all(isinstance(frame, Frame) and frame.body.endswith(big) for frame in answered)
    finally:
        writer.close()
        await server.stop(0)


class StalledLaneServer:
    """A lane server that reads nothing until :attr:`go` is set, then answers every request."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.requests: list[int] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.address = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        writer.transport.pause_reading()
        await self.go.wait()
        writer.transport.resume_reading()
        cutter = FrameReader(8 * 1024 * 1024)
        while data := await reader.read(1 << 20):
            for frame in cutter.feed(data):
                if frame.kind == REQUEST:  # CANCELs of calls that ended waiting are ignored
                    self.requests.append(frame.stream_id)
                    writer.write(encode_response(frame.stream_id, (), b"ok"))
            await writer.drain()
        writer.close()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()


async def send_in_turns(
    lane: LaneClient, count: int, payload: bytes, deadline: float
) -> list[asyncio.Task[tuple[bytes, Any]]]:
    """``count`` calls, each started in its own turn of the loop (so each is its own write)."""
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(lane.unary("/t.v1.T/Echo", payload, [], Deadline.after(deadline))))
        await asyncio.sleep(0.005)
    return tasks


async def test_calls_wait_while_the_worker_reads_nothing_and_go_once_it_does() -> None:
    """Client flow control: requests never pile up in the gateway without bound."""
    stalled = StalledLaneServer()
    await stalled.start()
    lane = LaneClient(stalled.address)
    megabyte = b"r" * (1 << 20)
    try:
        tasks = await send_in_turns(lane, 40, megabyte, deadline=60)
        connection = lane._connection
        assert connection is not None and connection._transport is not None
        async with asyncio.timeout(10):
            while connection.drained is None:  # noqa: ASYNC110 - pause_writing has no event
                await asyncio.sleep(0.01)
        # Past the 64 KiB high-water mark by one request at most, not by the 40 MB asked for.
        assert connection._transport.get_write_buffer_size() <= (1 << 20) + 128 * 1024
        waiting = [task for task in tasks if not task.done()]
        assert len(waiting) == 40
        stalled.go.set()
        async with asyncio.timeout(30):
            replies = await asyncio.gather(*tasks)
        assert [body for body, _ in replies] == [b"ok"] * 40
        assert sorted(stalled.requests) == list(range(1, 41))
    finally:
        stalled.go.set()
        await lane.close()
        await stalled.stop()


async def test_a_call_waiting_for_a_worker_that_reads_nothing_ends_at_its_deadline_unsent() -> None:
    stalled = StalledLaneServer()
    await stalled.start()
    lane = LaneClient(stalled.address)
    try:
        tasks = await send_in_turns(lane, 40, b"r" * (1 << 20), deadline=0.5)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(result, CallError) for result in results)
        codes = {result.code for result in results if isinstance(result, CallError)}
        assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED}
        stalled.go.set()
        connection = lane._connection
        assert connection is not None
        async with asyncio.timeout(10):  # the worker reads again: what was written reaches it
            while connection.drained is not None:  # noqa: ASYNC110 - resume_writing has no event
                await asyncio.sleep(0.01)
            reply, _ = await lane.unary("/t.v1.T/Echo", b"after", [], Deadline.after(5))
        assert reply == b"ok"
        # Calls that waited were never written (nor numbered): of the 40 that timed out, the
        # worker saw only those sent before the pause, then the last call.
        sent_before = len(stalled.requests) - 1
        assert 0 < sent_before < 40
        assert stalled.requests == list(range(1, sent_before + 2))
    finally:
        stalled.go.set()
        await lane.close()
        await stalled.stop()


@contextlib.asynccontextmanager
async def limited(endpoint: Endpoint, max_concurrent_calls: int) -> AsyncIterator[tuple[LaneServer, LaneClient]]:
    """A lane server running at most ``max_concurrent_calls`` per connection, and its client;
    whatever the test left waiting is released at the end."""
    server = LaneServer(endpoint, host="127.0.0.1", max_concurrent_calls=max_concurrent_calls)
    await server.start()
    lane = LaneClient(server.address)
    try:
        yield server, lane
    finally:
        endpoint.release.set()
        await lane.close()
        await server.stop(0)


async def test_a_connection_runs_at_most_max_concurrent_calls_and_reads_the_rest_as_they_end(
    endpoint: Endpoint,
) -> None:
    async with limited(endpoint, 4) as (server, lane):
        calls = [asyncio.create_task(lane.unary("/t.v1.T/Wait", b"", [], Deadline.after(30))) for _ in range(10)]
        async with asyncio.timeout(10):
            while len(endpoint.seen) < 4:  # noqa: ASYNC110 - the endpoint counts, it has no event
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # time enough for any further request to be read and started
        assert len(endpoint.seen) == 4
        (connection,) = server._connections
        assert connection._transport is not None and not connection._transport.is_reading()
        endpoint.release.set()
        async with asyncio.timeout(10):
            answers = await asyncio.gather(*calls)
        assert [body for body, _ in answers] == [b"released"] * 10
        assert len(endpoint.seen) == 10
        assert connection._transport is not None and connection._transport.is_reading()


async def test_a_cancelled_call_frees_its_place_among_the_concurrent_calls(endpoint: Endpoint) -> None:
    async with limited(endpoint, 2) as (_, lane):
        first = asyncio.create_task(lane.unary("/t.v1.T/Wait", b"", [], Deadline.after(30)))
        second = asyncio.create_task(lane.unary("/t.v1.T/Wait", b"", [], Deadline.after(30)))
        third = asyncio.create_task(lane.unary("/t.v1.T/Echo", b"three", [], Deadline.after(30)))
        async with asyncio.timeout(10):
            while len(endpoint.seen) < 2:  # noqa: ASYNC110 - the endpoint counts, it has no event
                await asyncio.sleep(0.01)
        first.cancel()  # a CANCEL frame: the worker stops it, and the third call is read
        async with asyncio.timeout(10):
            body, _ = await third
        assert body == b"three"
        assert endpoint.cancelled.is_set()
        endpoint.release.set()
        async with asyncio.timeout(10):
            assert (await second)[0] == b"released"


def test_max_concurrent_calls_must_be_positive(endpoint: Endpoint) -> None:
    with pytest.raises(ValueError, match="max_concurrent_calls must be at least 1, not 0"):
        LaneServer(endpoint, max_concurrent_calls=0)


async def test_a_request_cancelled_while_it_waits_never_runs(endpoint: Endpoint) -> None:
    async with limited(endpoint, 1) as (server, lane):
        running = asyncio.create_task(lane.unary("/t.v1.T/Wait", b"", [], Deadline.after(30)))
        waiting = asyncio.create_task(lane.unary("/t.v1.T/Echo", b"never", [], Deadline.after(30)))
        async with asyncio.timeout(10):
            while not server._connections or not next(iter(server._connections))._waiting:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        waiting.cancel()
        (connection,) = server._connections
        async with asyncio.timeout(10):
            while connection._waiting:  # noqa: ASYNC110 - the CANCEL frame has no event
                await asyncio.sleep(0.01)
        endpoint.release.set()
        async with asyncio.timeout(10):
            assert (await running)[0] == b"released"
            assert (await lane.unary("/t.v1.T/Echo", b"after", [], Deadline.after(5)))[0] == b"after"
        assert [method for method, payload, *_ in endpoint.seen if payload == b"never"] == []
