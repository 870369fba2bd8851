"""How the lane and the module client behave when something fails: a handler's own UNAVAILABLE,
a worker draining or dropped from the registry, a worker that reads nothing, statuses that cannot
be framed, stream ids coming round again, and requests that waited for a call slot.

Every test uses real sockets: a LaneServer, and where the module client is involved, a grpc.aio
server handing out the lane's address (``where_handler``) and serving the same method over gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest

from runtime.client import InstancePool, ModuleClient
from runtime.deadline import Deadline
from runtime.errors import Unavailable
from runtime.lane import LaneClient, LaneServer, where_handler
from runtime.lane._frames import (
    REFUSED,
    STATUS,
    FrameReader,
    decode_refused,
    decode_status,
    encode_refused,
    encode_request,
)
from runtime.status import RpcStatus
from runtime.transport import CallError, Disconnected, Unreached

Pairs = Sequence[tuple[str, str | bytes]]
Reply = tuple[bytes, tuple[tuple[str, str | bytes], ...]]


@dataclass
class Worker:
    """What a test's lane endpoint saw and did."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: list[bytes] = field(default_factory=list)
    deadlines: list[float | None] = field(default_factory=list)
    grpc_calls: int = 0

    async def unary(self, method: str, payload: bytes, metadata: Pairs, deadline: Deadline | None) -> Reply:
        self.deadlines.append(None if deadline is None else deadline.remaining())
        if method == "/t.v1.T/Down":  # the handler's own answer: its database is down
            raise CallError(RpcStatus(grpc.StatusCode.UNAVAILABLE, "the users database is down"))
        if method == "/t.v1.T/BadTrailer":
            raise CallError(RpcStatus(grpc.StatusCode.NOT_FOUND, "no such user", (("x-n", 42),)))  # type: ignore[arg-type]
        if method == "/t.v1.T/Surrogate":
            raise CallError(RpcStatus(grpc.StatusCode.NOT_FOUND, "no file \udcff.txt"))
        if method == "/t.v1.T/Slow":
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.append(payload)
                raise
            return b"slow:" + payload, ()
        return b"echo:" + payload, ()


def lane_of(client: ModuleClient, key: str = "m") -> Any:
    """The lane the pool uses for the (only) instance of ``key`` now, if any."""
    (address,) = client.pool.addresses(key)
    worker = client.pool._workers.get(address)
    return None if worker is None else worker._lane


@dataclass
class Stack:
    worker: Worker
    lane: LaneServer
    server: grpc.aio.Server
    client: ModuleClient
    address: str


@contextlib.asynccontextmanager
async def stack(*, close_grace: float = 5.0, max_concurrent_calls: int = 1024) -> AsyncIterator[Stack]:
    """A worker serving ``/t.v1.T/*`` over its lane and over gRPC, and a module client whose
    pool already uses the lane."""
    worker = Worker()
    lane = LaneServer(worker, host="127.0.0.1", max_concurrent_calls=max_concurrent_calls)
    await lane.start()

    async def over_grpc(payload: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        worker.grpc_calls += 1
        return b"grpc:" + payload

    grpc_handler = grpc.method_handlers_generic_handler(
        "t.v1.T", {"Echo": grpc.unary_unary_rpc_method_handler(over_grpc)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((where_handler(lambda: lane.address), grpc_handler))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    client = ModuleClient(InstancePool(lanes=True, close_grace=close_grace))
    client.pool.update("m", [address])
    try:
        reply, _ = await client.call("m", "/t.v1.T/Echo", b"first", deadline=Deadline.after(5))
        assert reply == b"grpc:first"  # the lane is being looked up meanwhile
        async with asyncio.timeout(10):
            while lane_of(client) is None:  # noqa: ASYNC110 - no event for it
                await asyncio.sleep(0.01)
        yield Stack(worker, lane, server, client, address)
    finally:
        worker.release.set()
        await client.close()
        await server.stop(0)
        await lane.stop(0)


async def test_a_handlers_own_unavailable_leaves_the_other_calls_on_the_lane_alone() -> None:
    async with stack() as s:
        slow = [
            asyncio.create_task(s.client.call("m", "/t.v1.T/Slow", b"%d" % i, deadline=Deadline.after(10)))
            for i in range(5)
        ]
        await asyncio.sleep(0.1)
        with pytest.raises(Unavailable, match="the users database is down"):
            await s.client.call("m", "/t.v1.T/Down", b"", deadline=Deadline.after(5))
        lane = lane_of(s.client)
        assert lane is not None  # still in use
        s.worker.release.set()
        replies = await asyncio.gather(*slow)
        assert [body for body, _ in replies] == [b"slow:%d" % i for i in range(5)]
        assert s.worker.cancelled == []


async def test_a_draining_worker_refuses_new_calls_which_go_over_grpc_while_its_calls_finish() -> None:
    async with stack() as s:
        in_flight = asyncio.create_task(s.client.call("m", "/t.v1.T/Slow", b"1", deadline=Deadline.after(10)))
        await asyncio.sleep(0.1)
        stopping = asyncio.create_task(s.lane.stop(grace=10))
        await asyncio.sleep(0.1)
        # Refused, never started: re-sent over gRPC though the call is not idempotent.
        reply, _ = await s.client.call("m", "/t.v1.T/Echo", b"2", deadline=Deadline.after(5))
        assert reply == b"grpc:2"
        s.worker.release.set()
        assert (await in_flight)[0] == b"slow:1"  # the drain let it finish
        await stopping
        assert s.worker.cancelled == []


async def test_a_worker_dropped_from_the_registry_gets_close_grace_for_its_lane_calls() -> None:
    async with stack(close_grace=10) as s:
        in_flight = asyncio.create_task(s.client.call("m", "/t.v1.T/Slow", b"1", deadline=Deadline.after(10)))
        await asyncio.sleep(0.1)
        s.client.pool.update("m", [])  # the worker deregistered to drain
        await asyncio.sleep(0.2)
        assert not in_flight.done()
        s.worker.release.set()
        assert (await in_flight)[0] == b"slow:1"
        assert s.worker.cancelled == []


async def test_a_lane_closed_without_grace_fails_its_calls_as_disconnected() -> None:
    async with stack() as s:
        lane = lane_of(s.client)
        assert isinstance(lane, LaneClient)
        in_flight = asyncio.create_task(lane.unary("/t.v1.T/Slow", b"1", [], Deadline.after(10)))
        await asyncio.sleep(0.1)
        await lane.close()
        with pytest.raises(Disconnected, match="was closed"):
            await in_flight
        with pytest.raises(Unreached, match="is closed"):  # a new call goes another way
            await lane.unary("/t.v1.T/Echo", b"2", [], Deadline.after(5))


async def test_closing_a_lane_to_a_worker_that_reads_nothing_ends() -> None:
    peers: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()
        peers.append(writer)

    listener = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    lane = LaneClient(f"127.0.0.1:{port}", max_message_bytes=16 << 20)
    try:
        calls = [asyncio.create_task(lane.unary("/t.v1.T/M", b"x" * (4 << 20), [], Deadline.after(1))) for _ in range(4)]
        waiting = asyncio.create_task(lane.unary("/t.v1.T/M", b"y", [], None))  # no deadline
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, CallError) and r.code == grpc.StatusCode.DEADLINE_EXCEEDED for r in results)
        async with asyncio.timeout(10):  # bounded: the buffer that never drains is dropped
            await lane.close(grace=0.2)
            with pytest.raises(CallError) as caught:  # the call without a deadline ends too
                await waiting
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        for writer in peers:
            writer.transport.abort()
        listener.close()


async def test_a_status_that_cannot_be_framed_is_answered_internal() -> None:
    worker = Worker()
    async with LaneServer(worker, host="127.0.0.1") as server, LaneClient(server.address) as lane:
        async with asyncio.timeout(10):
            with pytest.raises(CallError) as caught:
                await lane.unary("/t.v1.T/BadTrailer", b"", [], None)
        assert (caught.value.code, caught.value.details) == (grpc.StatusCode.INTERNAL, "internal error")
        async with asyncio.timeout(10):
            with pytest.raises(CallError) as caught:
                await lane.unary("/t.v1.T/Surrogate", b"", [], None)
        assert (caught.value.code, caught.value.details) == (grpc.StatusCode.NOT_FOUND, "no file ?.txt")


async def test_stream_ids_still_open_are_skipped_when_the_count_comes_round() -> None:
    worker = Worker()
    async with LaneServer(worker, host="127.0.0.1") as server, LaneClient(server.address) as lane:
        old = asyncio.create_task(lane.unary("/t.v1.T/Slow", b"old", [], Deadline.after(10)))
        await asyncio.sleep(0.1)
        connection = lane._connection
        assert connection is not None
        (old_id,) = connection.pending
        connection._last_id = (old_id - 1) & 0xFFFFFFFF  # the next id would be the old call's
        new, _ = await lane.unary("/t.v1.T/Echo", b"new", [], Deadline.after(5))
        assert new == b"echo:new"
        worker.release.set()
        assert (await old)[0] == b"slow:old"


async def raw_connection(server: LaneServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.address.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def test_a_request_reusing_an_open_stream_id_closes_the_connection() -> None:
    worker = Worker()
    async with LaneServer(worker, host="127.0.0.1") as server:
        reader, writer = await raw_connection(server)
        try:
            writer.write(encode_request(7, "/t.v1.T/Slow", (), None, b"a"))
            writer.write(encode_request(7, "/t.v1.T/Slow", (), None, b"b"))
            await writer.drain()
            async with asyncio.timeout(10):
                assert await reader.read() == b""  # closed by the server, nothing answered
            assert worker.cancelled == [b"a"]
        finally:
            writer.close()


async def test_a_request_that_waited_for_a_call_slot_has_only_its_time_left() -> None:
    worker = Worker()
    async with LaneServer(worker, host="127.0.0.1", max_concurrent_calls=1) as server:
        lane = LaneClient(server.address)
        try:
            busy = asyncio.create_task(lane.unary("/t.v1.T/Slow", b"", [], None))
            waited = asyncio.create_task(lane.unary("/t.v1.T/Echo", b"", [], Deadline.after(30)))
            await asyncio.sleep(1.0)
            worker.release.set()
            await busy
            await waited
            assert worker.deadlines[0] is None
            left = worker.deadlines[1]
            assert left is not None and left < 29.5  # the second it waited counts against it
        finally:
            await lane.close()


async def test_a_request_whose_deadline_passes_while_it_waits_is_never_run() -> None:
    worker = Worker()
    async with LaneServer(worker, host="127.0.0.1", max_concurrent_calls=1) as server:
        reader, writer = await raw_connection(server)
        try:
            writer.write(encode_request(1, "/t.v1.T/Slow", (), None, b"busy"))
            writer.write(encode_request(2, "/t.v1.T/Echo", (), 0.2, b"late"))
            await writer.drain()
            await asyncio.sleep(0.5)
            worker.release.set()
            frames = []
            cutter = FrameReader()
            async with asyncio.timeout(10):
                while len(frames) < 2:
                    frames += cutter.feed(await reader.read(65536))
            late = next(f for f in frames if f.stream_id == 2)
            assert late.kind == STATUS
            code, details, _ = decode_status(late.body)
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
            assert "waited for a free call slot" in details
            assert len(worker.deadlines) == 1  # only the busy call ever ran
        finally:
            writer.close()


async def test_a_stopping_server_refuses_with_a_refused_frame() -> None:
    worker = Worker()
    server = LaneServer(worker, host="127.0.0.1")
    await server.start()
    reader, writer = await raw_connection(server)
    try:
        writer.write(encode_request(1, "/t.v1.T/Slow", (), None, b"running"))
        await writer.drain()
        await asyncio.sleep(0.1)
        stopping = asyncio.create_task(server.stop(grace=10))
        await asyncio.sleep(0.1)
        writer.write(encode_request(2, "/t.v1.T/Echo", (), None, b"new"))
        await writer.drain()
        cutter = FrameReader()
        async with asyncio.timeout(10):
            frames = cutter.feed(await reader.read(65536))
        assert [(f.stream_id, f.kind) for f in frames] == [(2, REFUSED)]
        assert decode_refused(frames[0].body) == "the lane server is stopping"
        worker.release.set()
        await stopping
    finally:
        writer.close()
        worker.release.set()


def test_a_refused_frame_round_trips() -> None:
    (frame,) = FrameReader().feed(encode_refused(9, "stopping \udcff"))
    assert (frame.stream_id, frame.kind, decode_refused(frame.body)) == (9, REFUSED, "stopping ?")


async def test_a_worker_whose_grpc_port_is_taken_leaves_no_lane_listening(
    gw_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.worker import Worker as ModuleWorker
    from runtime.worker import _server as worker_server

    started: list[LaneServer] = []

    class Recorded(LaneServer):
        async def start(self) -> str:
            started.append(self)
            return await super().start()

    monkeypatch.setattr(worker_server, "LaneServer", Recorded)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = ModuleWorker("users", gw_settings(), host="127.0.0.1", port=port)
        try:
            with pytest.raises((OSError, RuntimeError)):
                await worker.start()
            (lane,) = started
            host, lane_port = lane.address.rsplit(":", 1)
            with pytest.raises(OSError):  # the failed start closed it: nothing listens there
                _, writer = await asyncio.open_connection(host, int(lane_port))
                writer.close()
        finally:
            await worker.stop(0)
