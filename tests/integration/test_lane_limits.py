"""The lane's own limits (the lane is ours, so no library enforces them), over real sockets.

A lane server with small :class:`~runtime.lane.LaneLimits`, attacked with raw sockets the way
each limit is meant for, while a real :class:`~runtime.lane.LaneClient` keeps being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest

from runtime.config import LimitsSettings
from runtime.deadline import Deadline
from runtime.lane import LaneClient, LaneLimits, LaneServer, lane_limits
from runtime.lane import _client as lane_client
from runtime.lane._frames import HEADER, REQUEST, encode_cancel, encode_request, encode_response
from runtime.transport import CallError

Pairs = Sequence[tuple[str, str | bytes]]


class Answer:
    """Echoes, or answers ``/t/Big`` with as many bytes as asked for."""

    async def unary(
        self, method: str, payload: bytes, metadata: Pairs, deadline: Deadline | None
    ) -> tuple[bytes, tuple[tuple[str, str | bytes], ...]]:
        if method == "/t/Big":
            return b"x" * int(payload), ()
        if method == "/t/Sleep":
            await asyncio.sleep(float(payload))
        return payload, ()


def limits(**changes: float) -> LaneLimits:
    base: dict[str, float] = {"handshake_timeout": 0.5, "idle_timeout": 30.0}
    return LaneLimits(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture
async def serve() -> AsyncIterator[list[LaneServer]]:
    servers: list[LaneServer] = []
    yield servers
    for server in servers:
        await server.stop(0)


async def start(servers: list[LaneServer], lane_limits: LaneLimits) -> tuple[LaneServer, int]:
    server = LaneServer(Answer(), host="127.0.0.1", limits=lane_limits)
    servers.append(server)
    address = await server.start()
    return server, int(address.rsplit(":", 1)[1])


def closed_within(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(1 << 20):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


async def test_connections_past_the_limit_are_closed_and_the_client_is_still_served(
    serve: list[LaneServer],
) -> None:
    server, port = await start(serve, limits(max_connections=3))
    async with LaneClient(f"127.0.0.1:{port}") as client:
        assert await client.unary("/t/Echo", b"hi", [], Deadline.after(5)) == (b"hi", ())
        flood = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
        try:
            refused = await asyncio.gather(*(asyncio.to_thread(closed_within, s, 0.3) for s in flood))
            assert sum(refused) >= 4 and server.refused >= 4
            assert await client.unary("/t/Echo", b"still", [], Deadline.after(5)) == (b"still", ())
        finally:
            for sock in flood:
                sock.close()


async def test_a_silent_connection_and_a_half_sent_frame_are_cut_off(serve: list[LaneServer]) -> None:
    server, port = await start(serve, limits())
    silent = socket.create_connection(("127.0.0.1", port))
    half = socket.create_connection(("127.0.0.1", port))
    whole = encode_request(1, "/t/Echo", (), None, b"y" * 100_000)
    half.sendall(whole[: len(whole) // 2])  # the rest never comes
    try:
        assert await asyncio.to_thread(closed_within, silent, 3.0)
        assert await asyncio.to_thread(closed_within, half, 3.0)
        assert server.timed_out == 2 and server.connections == 0  # nothing of the frame is kept
    finally:
        silent.close()
        half.close()


def trickle(sock: socket.socket, data: bytes, every: float, within: float) -> bool:
    """Send ``data`` a byte every ``every`` seconds: whether the server cut ``sock`` off
    within ``within`` seconds."""
    sock.settimeout(every)
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
            if not sock.recv(1 << 16):
                return True
        except TimeoutError:
            within -= every
            if within <= 0:
                return False
        except OSError:
            return True
    return False


async def test_a_frame_trickled_a_byte_at_a_time_is_cut_off_and_the_client_is_served(
    serve: list[LaneServer],
) -> None:
    """Each byte keeps the connection active, so a frame must arrive whole within the handshake
    timeout however it trickles; its first part is never kept past it."""
    server, port = await start(serve, limits())
    whole = encode_request(1, "/t/Echo", (), None, b"y" * 100_000)
    trickler = socket.create_connection(("127.0.0.1", port))
    trickler.sendall(whole[:50_000])
    try:
        async with LaneClient(f"127.0.0.1:{port}") as client:
            assert await asyncio.to_thread(trickle, trickler, whole[50_000:], 0.1, 5.0)
            assert server.timed_out == 1
            assert await client.unary("/t/Echo", b"served", [], Deadline.after(5)) == (b"served", ())
    finally:
        trickler.close()


async def test_a_frame_half_read_while_the_server_stopped_reading_is_not_cut_off(serve: list[LaneServer]) -> None:
    """With ``max_concurrent_calls`` busy and more requests waiting, the server stops reading
    (its own doing): the rest of a frame it read half of cannot arrive meanwhile, however long
    the calls take, so that time does not count against the frame."""
    server, port = await start(serve, limits(max_concurrent_calls=1))
    big = encode_request(7, "/t/Echo", (), None, b"z" * 20_000)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            encode_request(1, "/t/Sleep", (), None, b"1.5")
            + encode_request(3, "/t/Echo", (), None, b"three")
            + encode_request(5, "/t/Echo", (), None, b"five")
            + big[:10_000]
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(big[10_000:])
        await writer.drain()
        answered = set()
        while len(answered) < 4:
            length, stream_id, _ = HEADER.unpack(await asyncio.wait_for(reader.readexactly(HEADER.size), 5))
            await reader.readexactly(length)
            answered.add(stream_id)
        assert answered == {1, 3, 5, 7} and server.timed_out == 0
    finally:
        writer.close()


async def test_an_idle_connection_is_closed_and_the_client_reconnects(serve: list[LaneServer]) -> None:
    server, port = await start(serve, limits(idle_timeout=0.5))
    async with LaneClient(f"127.0.0.1:{port}") as client:
        assert (await client.unary("/t/Echo", b"1", [], Deadline.after(5)))[0] == b"1"
        await asyncio.sleep(2.0)
        assert server.connections == 0 and server.timed_out == 1
        assert (await client.unary("/t/Echo", b"2", [], Deadline.after(5)))[0] == b"2"


async def test_a_client_that_never_reads_is_cut_off_at_the_buffer_limit(serve: list[LaneServer]) -> None:
    server, port = await start(serve, limits(max_buffered_bytes=2_000_000))
    reader = socket.create_connection(("127.0.0.1", port))
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        for stream_id in range(1, 41):  # 40 MB of answers asked for, none read
            reader.sendall(encode_request(stream_id, "/t/Big", (), None, b"1000000"))
        await asyncio.sleep(1.0)
        assert server.connections == 0, "cut off once its unread answers passed the limit"
    finally:
        reader.close()
    async with LaneClient(f"127.0.0.1:{port}") as client:
        assert (await client.unary("/t/Echo", b"ok", [], Deadline.after(5)))[0] == b"ok"


async def test_a_cancel_for_an_unknown_stream_is_ignored_and_the_connection_serves_on(
    serve: list[LaneServer],
) -> None:
    _, port = await start(serve, limits(max_concurrent_calls=1))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(encode_cancel(n) for n in range(10_000, 20_000)))
        writer.write(encode_request(1, "/t/Echo", (), None, b"after"))
        await writer.drain()
        head = await asyncio.wait_for(reader.readexactly(HEADER.size), 5)
        length, stream_id, kind = HEADER.unpack(head)
        body = await reader.readexactly(length)
        assert (stream_id, kind != REQUEST) == (1, True) and body.endswith(b"after")
    finally:
        writer.close()


async def test_a_vanished_client_is_found_by_tcp_keepalive(serve: list[LaneServer]) -> None:
    """A client host that disappears sends nothing, not even a close: the kernel's keepalive
    probes, timed by ``keepalive_time`` and ``keepalive_timeout``, drop its connection."""
    server, port = await start(serve, limits(keepalive_time=7, keepalive_timeout=3))
    with socket.create_connection(("127.0.0.1", port)):
        for _ in range(100):
            if server.connections:
                break
            await asyncio.sleep(0.01)
        (connection,) = server._connections
        served = connection._transport.get_extra_info("socket")
        assert served.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert served.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
        assert served.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 3
        assert served.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 1


def test_the_lane_takes_fewer_connections_than_a_grpc_port() -> None:
    """Each lane connection holds asyncio's 256 KiB TLS buffer before its certificate is
    checked: the lane's own cap, below the servers' ``max_connections``, and below the
    process's budget when that is lower."""
    settings = LimitsSettings()
    assert lane_limits(settings).max_connections == settings.lane_max_connections == 256
    assert lane_limits(settings, max_connections=100).max_connections == 100
    assert lane_limits(LimitsSettings(max_connections=50)).max_connections == 50


async def test_an_answer_trickled_by_the_server_ends_the_connection_and_its_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client's side of the same rule: a worker that sends the first part of an answer and
    then a byte now and then cannot keep that part in the gateway; the calls on the connection
    fail INTERNAL naming it, and the next call connects again."""
    monkeypatch.setattr(lane_client, "FRAME_SECONDS", 0.5)
    answer = encode_response(1, (), b"a" * 100_000)
    trickled = asyncio.Event()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length, _, _ = HEADER.unpack(await reader.readexactly(HEADER.size))
        await reader.readexactly(length)
        if trickled.is_set():  # the second connection: answered whole
            writer.write(encode_response(1, (), b"whole"))
            await writer.drain()
            await reader.read()
            return
        trickled.set()
        writer.write(answer[:50_000])
        with contextlib.suppress(ConnectionError):
            for byte in answer[50_000:60_000]:
                await asyncio.sleep(0.1)
                writer.write(bytes([byte]))
                await writer.drain()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with LaneClient(f"127.0.0.1:{port}") as client:
            started = time.monotonic()
            with pytest.raises(CallError) as failed:
                await client.unary("/t/Echo", b"x", [], Deadline.after(30))
            assert failed.value.status.code == grpc.StatusCode.INTERNAL
            assert "took more than 0.5s to arrive" in failed.value.status.details
            assert time.monotonic() - started < 5
            assert await client.unary("/t/Echo", b"y", [], Deadline.after(5)) == (b"whole", ())
    finally:
        server.close()
