"""Streams over the lane, on real sockets on 127.0.0.1: a LaneClient streaming to a LaneServer.

The served transport here is :class:`Streams`, whose method path picks what a stream does; it
records what it produced and whether it was cancelled, so the tests can see both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterable, AsyncIterator, Sequence

import grpc
import pytest

from runtime.deadline import Deadline
from runtime.lane import LaneClient, LaneServer
from runtime.lane._frames import MESSAGE_COST, STREAM_WINDOW, encode_message, encode_open
from runtime.status import RpcStatus
from runtime.transport import CallError, MessageQueue, Metadata, ProducedStream, StreamCall

Pairs = Sequence[tuple[str, str | bytes]]
TRAILERS: Metadata = (("x-request-id", "stream-1"),)


class Streams:
    """A served transport whose streams count, add up, echo, fail or hold, by method path."""

    def __init__(self) -> None:
        self.produced = 0
        self.read = 0
        self.cancelled = asyncio.Event()
        self.ended = asyncio.Event()
        self.seen: list[tuple[str, tuple[tuple[str, str | bytes], ...], Deadline | None]] = []

    async def unary(self, method: str, payload: bytes, metadata: Pairs, deadline: Deadline | None) -> tuple[bytes, Metadata]:
        return payload, TRAILERS

    def stream(self, method: str, requests: AsyncIterable[bytes], metadata: Pairs, deadline: Deadline | None) -> StreamCall:
        self.seen.append((method, tuple(metadata), deadline))

        async def produce(out: MessageQueue) -> Metadata:
            try:
                return await self._produce(method, requests, out)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            finally:
                self.ended.set()

        return ProducedStream(produce, capacity=1)

    async def _produce(self, method: str, requests: AsyncIterable[bytes], out: MessageQueue) -> Metadata:
        name = method.rpartition("/")[2]
        if name == "Count":
            upto = int(b"".join([m async for m in requests]))
            for n in range(1, upto + 1):
                await out.put(str(n).encode())
                self.produced += 1
        elif name == "Sum":
            total = 0
            async for message in requests:
                total += int(message)
            await out.put(str(total).encode())
        elif name == "Echo":
            async for message in requests:
                await out.put(b"echo " + message)
        elif name == "Flood":  # never ends: 1 KiB messages as fast as they are taken
            while True:
                await out.put(b"x" * 1024)
                self.produced += 1
        elif name == "Fail":
            for n in range(1, 4):
                await out.put(str(n).encode())
            raise CallError(RpcStatus(grpc.StatusCode.NOT_FOUND, "no fourth message"))
        elif name == "Slow":  # reads one request message every 50 ms
            async for _message in requests:
                self.read += 1
                await asyncio.sleep(0.05)
        elif name == "Hold":
            await asyncio.Event().wait()
        return TRAILERS


@pytest.fixture
async def served() -> AsyncIterator[tuple[Streams, LaneClient, LaneServer]]:
    streams = Streams()
    server = LaneServer(streams, host="127.0.0.1")
    address = await server.start()
    client = LaneClient(address)
    try:
        yield streams, client, server
    finally:
        await client.close()
        await server.stop(0)


async def requests(*messages: bytes) -> AsyncIterator[bytes]:
    for message in messages:
        yield message


async def read_all(call: StreamCall) -> list[bytes]:
    try:
        return [message async for message in call]
    finally:
        await call.aclose()


async def test_a_server_stream_arrives_in_order_with_its_trailers(served: tuple[Streams, LaneClient, LaneServer]) -> None:
    streams, client, _ = served
    call = client.stream("/t.v1.T/Count", requests(b"2000"), [("x-api-version", "v")], Deadline.after(10))
    got = await read_all(call)
    assert got == [str(n).encode() for n in range(1, 2001)]
    assert call.trailers == TRAILERS
    method, metadata, deadline = streams.seen[0]
    assert method == "/t.v1.T/Count" and metadata == (("x-api-version", "v"),)
    assert deadline is not None and 9 < deadline.remaining() <= 10


async def test_a_client_stream_and_a_bidirectional_stream_carry_every_message(
    served: tuple[Streams, LaneClient, LaneServer],
) -> None:
    _, client, _ = served
    numbers = [str(n).encode() for n in range(500)]
    assert await read_all(client.stream("/t.v1.T/Sum", requests(*numbers), [], None)) == [b"124750"]

    async def one_at_a_time() -> AsyncIterator[bytes]:
        for n in range(3):
            yield f"m{n}".encode()
            await asyncio.sleep(0.01)

    assert await read_all(client.stream("/t.v1.T/Echo", one_at_a_time(), [], None)) == [b"echo m0", b"echo m1", b"echo m2"]


async def test_streams_and_unary_calls_share_one_connection(served: tuple[Streams, LaneClient, LaneServer]) -> None:
    _, client, server = served
    counts = [client.stream("/t.v1.T/Count", requests(str(n).encode()), [], None) for n in (50, 60, 70)]
    results = await asyncio.gather(*(read_all(call) for call in counts), client.unary("/t.v1.T/U", b"u", [], None))
    assert [len(r) for r in results[:3]] == [50, 60, 70]
    assert results[3] == (b"u", TRAILERS)
    assert server.connections == 1


async def test_a_status_mid_stream_ends_it_after_the_messages_before_it(served: tuple[Streams, LaneClient, LaneServer]) -> None:
    _, client, _ = served
    call = client.stream("/t.v1.T/Fail", requests(), [], None)
    got = []
    with pytest.raises(CallError) as failure:
        async for message in call:
            got.append(message)
    assert got == [b"1", b"2", b"3"]
    assert failure.value.code == grpc.StatusCode.NOT_FOUND and failure.value.details == "no fourth message"


async def test_a_reader_that_stops_reading_holds_the_producer_within_one_window(
    served: tuple[Streams, LaneClient, LaneServer],
) -> None:
    """Flow control: with nothing read, what is produced stays within a window (and the two
    one-message buffers), not the thousands a free-running producer makes in the same time."""
    streams, client, _ = served
    call = client.stream("/t.v1.T/Flood", requests(), [], None)
    first = await anext(call)
    assert len(first) == 1024
    await asyncio.sleep(0.5)
    held = streams.produced
    bound = STREAM_WINDOW // (1024 + MESSAGE_COST) + 4
    assert held <= bound
    for _ in range(2000):  # reading lets it go on, window by window
        await anext(call)
    assert streams.produced >= 2000
    await call.aclose()
    await asyncio.wait_for(streams.cancelled.wait(), 5)


async def test_a_server_that_reads_slowly_holds_the_client_s_sender(served: tuple[Streams, LaneClient, LaneServer]) -> None:
    streams, client, _ = served
    taken = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal taken
        while True:
            taken += 1
            yield b"y" * 4096

    call = client.stream("/t.v1.T/Slow", endless(), [], None)
    reading = asyncio.ensure_future(anext(call))
    await asyncio.sleep(0.5)
    # About 10 read in 0.5 s; the sender may be a window ahead of the reader, no more.
    assert taken <= streams.read + STREAM_WINDOW // 4096 + 3
    reading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reading
    await asyncio.wait_for(streams.cancelled.wait(), 5)


async def test_closing_a_stream_cancels_it_at_the_server(served: tuple[Streams, LaneClient, LaneServer]) -> None:
    streams, client, _ = served
    call = client.stream("/t.v1.T/Hold", requests(), [], None)
    opened = asyncio.ensure_future(anext(call))
    await asyncio.sleep(0.1)
    opened.cancel()  # the reader gives up: the stream is cancelled at both ends
    with contextlib.suppress(asyncio.CancelledError):
        await opened
    await asyncio.wait_for(streams.cancelled.wait(), 5)


async def test_a_deadline_ends_the_stream_at_both_ends(served: tuple[Streams, LaneClient, LaneServer]) -> None:
    streams, client, _ = served
    call = client.stream("/t.v1.T/Hold", requests(), [], Deadline.after(0.2))
    with pytest.raises(CallError) as failure:
        await anext(call)
    assert failure.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(streams.cancelled.wait(), 5)


async def test_a_failing_request_iterator_cancels_the_stream_and_names_the_cause(
    served: tuple[Streams, LaneClient, LaneServer],
) -> None:
    streams, client, _ = served

    async def broken() -> AsyncIterator[bytes]:
        yield b"1"
        raise ValueError("the caller's own bug")

    call = client.stream("/t.v1.T/Sum", broken(), [], None)
    with pytest.raises(CallError) as failure:
        await anext(call)
    assert failure.value.code == grpc.StatusCode.CANCELLED
    assert isinstance(failure.value.__cause__, ValueError)
    await asyncio.wait_for(streams.ended.wait(), 5)


async def test_a_client_that_sends_past_its_credit_is_disconnected(served: tuple[Streams, LaneClient, LaneServer]) -> None:
    """A peer that ignores flow control cannot make the server buffer without bound."""
    _, _, server = served
    host, port = server.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(encode_open(1, "/t.v1.T/Hold", (), None))
    chunk = encode_message(1, b"z" * 60_000)
    with contextlib.suppress(ConnectionError):
        for _ in range(200):  # 12 MB, far past one window and one message
            writer.write(chunk)
            await writer.drain()
    try:
        rest = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        rest = b""
    assert rest == b""  # the server closed the connection
    writer.close()


async def test_a_lane_that_cannot_be_reached_fails_before_taking_a_request(unused_tcp_port: int) -> None:
    client = LaneClient(f"127.0.0.1:{unused_tcp_port}")
    taken = []

    async def watched() -> AsyncIterator[bytes]:
        taken.append(1)
        yield b"1"

    call = client.stream("/t.v1.T/Count", watched(), [], None)
    with pytest.raises(CallError) as failure:
        await anext(call)
    assert failure.value.code == grpc.StatusCode.UNAVAILABLE
    assert taken == [] and not call.started
    await client.close()


@pytest.fixture
def unused_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
