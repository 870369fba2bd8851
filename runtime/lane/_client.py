"""The caller's end of the lane: a :class:`~runtime.transport.Transport` over one TCP connection.

Calls to one worker address share one connection, multiplexed by stream id: each call writes a
REQUEST frame and waits on a future that the RESPONSE or STATUS frame for its stream id settles.
Every failure arrives as a :class:`~runtime.transport.CallError`, so the module client translates
and retries lane calls exactly like gRPC calls:

- the worker's own status → :class:`~runtime.transport.CallError`, as it sent it;
- the worker cannot be reached, or refused the call without starting it (it is stopping) →
  :class:`~runtime.transport.Unreached`: UNAVAILABLE, and the call may go another way;
- the connection drops mid-call, or the client is closed under it →
  :class:`~runtime.transport.Disconnected`: UNAVAILABLE;
- the caller's deadline passes first → DEADLINE_EXCEEDED (a
  :class:`~runtime.transport.TransportError`), and a CANCEL frame tells the worker;
- a response past ``max_message_bytes`` → RESOURCE_EXHAUSTED.

While the worker does not read (its send buffer is past the transport's high-water mark), new
calls wait for it to drain, within their deadlines, so requests cannot pile up in this process
without bound.

A caller that is cancelled sends CANCEL too, then re-raises: cancellation is never swallowed.

A streaming call (:meth:`LaneClient.stream`, :class:`~runtime.lane._stream.LaneStream`) is an OPEN frame, then MESSAGE frames each way and
the client's HALF; the server ends it with END or STATUS. Each side sends only within the credit
the other grants (``_flow.py``), so the messages a slow reader has not read yet stay within one
window per stream, in this process and in the worker's. The connection is made before anything
is taken from the request iterator, so a lane that cannot be reached leaves the call untouched
for gRPC to carry.

With ``tls`` the connection is mutual TLS: this process's certificate, and the worker must
prove it is ``server`` (its certificate's name), or nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Callable

import grpc

from runtime.deadline import Deadline
from runtime.identity import Peer
from runtime.lane._frames import (
    CANCEL,
    DEFAULT_MAX_MESSAGE_BYTES,
    END,
    HALF,
    MESSAGE,
    METADATA_ALLOWANCE,
    OPEN,
    REFUSED,
    REQUEST,
    RESPONSE,
    STATUS,
    WINDOW,
    Frame,
    FrameError,
    FrameReader,
    Oversized,
    decode_refused,
    decode_response,
    decode_status,
    encode_cancel,
    encode_open,
    encode_request,
    too_large,
)
from runtime.lane._protocol import FramedProtocol, keep_alive, shut
from runtime.lane._stream import CODES as _CODES
from runtime.lane._stream import LaneStream
from runtime.lane._stream import failed as _failed
from runtime.status import RpcStatus
from runtime.tls import InternalTls
from runtime.transport import (
    CallError,
    Disconnected,
    MetadataIn,
    Reply,
    TransportError,
    Unreached,
)

__all__ = ["LaneClient", "LaneStream"]


_CLOSE_SECONDS = 1.0
"""How long :meth:`LaneClient.close` lets the connection flush before cutting it."""
FRAME_SECONDS = 10.0
"""How long a frame from the server may take to arrive once its first byte has (the servers'
``limits.handshake_timeout`` default): a worker that trickles an answer cannot keep its first
part, up to ``max_message_bytes``, in this process for ever."""
_KEEPALIVE_IDLE, _KEEPALIVE_INTERVAL, _KEEPALIVE_PROBES = 60.0, 20.0, 3
"""Probe an idle connection after 60 s, every 20 s, and give up after 3 misses: as grpc's
keepalive, so a call with no deadline to a host that vanished fails in minutes, not hours."""


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6 host]:port``) → ``(host, port)``; ValueError when it is neither."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"lane address {address!r} is not host:port")
    return host.removeprefix("[").removesuffix("]"), int(port)


class _Connection(FramedProtocol):
    """One connection to a lane server and the futures of the calls waiting on it."""

    def __init__(self, address: str, max_message_bytes: int) -> None:
        super().__init__()
        self.address = address
        self.max_message_bytes = max_message_bytes
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, asyncio.Future[Reply]] = {}
        self.streams: dict[int, LaneStream] = {}
        self.lost = False
        self._reader = FrameReader(max_message_bytes + METADATA_ALLOWANCE)
        self._frame_timer: asyncio.TimerHandle | None = None
        self._last_id = 0
        self.drained: asyncio.Future[None] | None = None
        """Set while writing is paused; settled when the transport drains or the connection is lost."""
        self.idle: asyncio.Future[None] | None = None
        """Set by :meth:`LaneClient.close` while it waits for the calls out to end."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        keep_alive(transport, idle=_KEEPALIVE_IDLE, interval=_KEEPALIVE_INTERVAL, probes=_KEEPALIVE_PROBES)

    @property
    def usable(self) -> bool:
        """Not lost, and not on its way out (the server's end may have closed already)."""
        transport = self._transport
        return not self.lost and transport is not None and not transport.is_closing()

    def pause_writing(self) -> None:
        if self.drained is None:
            self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        self._release()

    def _release(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def eof_received(self) -> None:
        self.lost = True  # the server closed its end: no answer can come any more

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._frame_timer is not None:
            self._frame_timer.cancel()
        super().connection_lost(exc)
        self._release()  # callers waiting to write find the connection gone and go elsewhere
        reason = f": {exc}" if exc is not None else ""
        details = f"lane connection to {self.address} was lost{reason}"
        self.fail_all(lambda: Disconnected(details))

    def fail_all(self, error: Callable[[], CallError]) -> None:
        """Fail every call and stream still out with a fresh ``error()`` each."""
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error())
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.ended(error())
        self._check_idle()

    def _check_idle(self) -> None:
        idle = self.idle
        if idle is not None and not self.pending and not self.streams and not idle.done():
            idle.set_result(None)

    def close(self) -> None:
        self.lost = True
        super().close()

    def abort(self) -> None:
        self.lost = True
        super().abort()

    def send(
        self,
        method: str,
        payload: bytes,
        metadata: MetadataIn,
        timeout: float | None,
    ) -> tuple[int, asyncio.Future[Reply]]:
        """Write the REQUEST frame of a new stream; its id and the future its answer settles."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise Unreached(f"lane connection to {self.address} is closed")
        stream_id = self._new_id()
        try:
            frame = encode_request(stream_id, method, metadata, timeout, payload)
        except FrameError as exc:
            raise _failed(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from exc
        future: asyncio.Future[Reply] = self.loop.create_future()
        self.pending[stream_id] = future
        self.write_frame(frame)
        return stream_id, future

    def _new_id(self) -> int:
        self._last_id = stream_id = (self._last_id + 1) & 0xFFFFFFFF
        while stream_id in self.pending or stream_id in self.streams:  # after 2**32 the ids come round
            self._last_id = stream_id = (stream_id + 1) & 0xFFFFFFFF
        return stream_id

    def open(self, stream: LaneStream, method: str, metadata: MetadataIn, timeout: float | None) -> int:
        """Write the OPEN frame of a new stream; its id (the stream gets its frames from now on)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise Unreached(f"lane connection to {self.address} is closed")
        stream_id = self._new_id()
        try:
            frame = encode_open(stream_id, method, metadata, timeout)
        except FrameError as exc:
            raise _failed(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from exc
        self.streams[stream_id] = stream
        self.write_frame(frame)
        return stream_id

    def close_stream(self, stream_id: int, *, cancel: bool) -> None:
        """Forget a stream (it ended, or is given up: then ``cancel`` tells the server)."""
        if self.streams.pop(stream_id, None) is None:
            return
        self._check_idle()
        transport = self._transport
        if cancel and transport is not None and not transport.is_closing():
            self.write_frame(encode_cancel(stream_id))

    def give_up(
        self, stream_id: int, code: grpc.StatusCode | None = None, details: str = ""
    ) -> None:
        """Stop waiting for ``stream_id`` (failing it with ``code`` when given), and tell the server."""
        future = self.pending.pop(stream_id, None)
        if future is None:
            return
        if code is not None and not future.done():
            future.set_exception(_failed(code, details))
        self._check_idle()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self.write_frame(encode_cancel(stream_id))

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except FrameError as exc:
            self._protocol_error(str(exc))
            return
        if self._frame_timer is None and self._reader.partial:
            self._frame_timer = self.loop.call_later(FRAME_SECONDS, self._frame_late)
        for frame in frames:
            kind = frame.kind
            if kind == REQUEST or kind == CANCEL or kind == OPEN or kind == HALF:  # a server never sends these
                self._protocol_error(f"a lane server sent a frame of kind {kind}")
                return
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                problem = stream.on_frame(frame)
                if problem is not None:
                    self._protocol_error(problem)
                    return
                continue
            if kind == MESSAGE or kind == WINDOW or kind == END:
                continue  # for a stream given up on (deadline, cancellation)
            if kind == REFUSED:  # not started: the call may go another way
                refused = self.pending.pop(frame.stream_id, None)
                if refused is not None and not refused.done():
                    reason = "" if isinstance(frame, Oversized) else decode_refused(frame.body)
                    refused.set_exception(Unreached(f"the lane at {self.address} refused the call: {reason}"))
                continue
            future = self.pending.pop(frame.stream_id, None)
            if future is None or future.done():
                continue  # the answer to a call given up on (deadline, cancellation)
            if isinstance(frame, Oversized):
                limit = self._reader.max_body
                message = too_large("response frame", frame.length, limit)
                future.set_exception(_failed(grpc.StatusCode.RESOURCE_EXHAUSTED, message))
            else:
                self._settle(future, frame)
        if self.idle is not None:
            self._check_idle()

    def _settle(self, future: asyncio.Future[Reply], frame: Frame) -> None:
        try:
            if frame.kind == RESPONSE:
                metadata, payload = decode_response(frame.body)
                if len(payload) > self.max_message_bytes:
                    message = too_large("response message", len(payload), self.max_message_bytes)
                    future.set_exception(_failed(grpc.StatusCode.RESOURCE_EXHAUSTED, message))
                else:
                    future.set_result((payload, metadata))
            else:
                assert frame.kind == STATUS
                code, details, trailing = decode_status(frame.body)
                status = RpcStatus(_CODES.get(code, grpc.StatusCode.UNKNOWN), details, trailing)
                future.set_exception(CallError(status))
        except FrameError as exc:
            future.set_exception(
                _failed(
                    grpc.StatusCode.INTERNAL, f"malformed lane answer from {self.address}: {exc}"
                )
            )

    def _frame_late(self) -> None:
        """One timer per connection, not per frame: a frame half-read when it fires that began
        more than :data:`FRAME_SECONDS` ago ends the connection."""
        self._frame_timer = None
        if not self._reader.partial or self.lost:
            return
        left = self._reader.began + FRAME_SECONDS - time.monotonic()
        if left > 0:  # a later frame: its own time
            self._frame_timer = self.loop.call_later(left, self._frame_late)
            return
        self._protocol_error(f"a frame took more than {FRAME_SECONDS:g}s to arrive")

    def _protocol_error(self, reason: str) -> None:
        details = f"malformed lane frame from {self.address}: {reason}"
        self.fail_all(lambda: _failed(grpc.StatusCode.INTERNAL, details))
        self.close()


class LaneClient:
    """A :class:`~runtime.transport.Transport` to the lane server at ``address``.

    It connects on the first call (concurrent first calls share one attempt) and again on the
    first call after the connection dropped. Use one client per worker address.

        client = LaneClient("127.0.0.1:40123")
        body, trailers = await client.unary("/users.v1.UsersService/GetUser", payload, [], Deadline.after(2))
        await client.close()
    """

    def __init__(
        self,
        address: str,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        connect_timeout: float = 5.0,
        tls: InternalTls | None = None,
        server: Peer | None = None,
    ) -> None:
        if tls is not None and server is None:
            raise ValueError("a TLS lane needs the identity the server must prove (server=)")
        self.address = address
        self._tls = tls
        self._server = server
        self._host, self._port = split_address(address)
        self._max_message_bytes = max_message_bytes
        self._connect_timeout = connect_timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False
        self.connected = False
        """Whether it ever connected: a lane that never could is not worth asking for soon again."""

    async def unary(
        self, method_path: str, payload: bytes, metadata: MetadataIn, deadline: Deadline | None
    ) -> Reply:
        connection = await self._ready_connection(method_path, deadline)
        timeout = None
        if deadline is not None:
            timeout = deadline.remaining()
            if timeout <= 0:
                raise self._deadline_exceeded(method_path)
        stream_id, future = connection.send(method_path, payload, metadata, timeout)
        timer = None
        if timeout is not None:
            timer = connection.loop.call_later(
                timeout, self._expire, connection, stream_id, method_path
            )
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                future.exception()  # settled in the same turn: retrieved, so nothing logs it
            connection.give_up(stream_id)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def stream(
        self, method_path: str, requests: AsyncIterable[bytes], metadata: MetadataIn, deadline: Deadline | None
    ) -> LaneStream:
        """A streaming call over the lane; it connects on the first read (see :class:`LaneStream`)."""
        return LaneStream(self, method_path, requests, metadata, deadline)

    async def _ready_connection(self, method_path: str, deadline: Deadline | None) -> _Connection:
        """The connection, made if need be, once the worker reads what is written to it."""
        connection = self._connection
        if connection is None or not connection.usable:
            connection = await self._connect(method_path, deadline)
        while connection.drained is not None:  # the worker is not reading: wait for it
            await self._drain(connection, method_path, deadline)
            if not connection.usable:
                connection = await self._connect(method_path, deadline)
        return connection

    async def _drain(self, connection: _Connection, method_path: str, deadline: Deadline | None) -> None:
        drained = connection.drained
        assert drained is not None
        # Shielded: one caller giving up must not settle the future the others wait on.
        if deadline is None:
            await asyncio.shield(drained)
            return
        try:
            async with asyncio.timeout(deadline.remaining()):
                await asyncio.shield(drained)
        except TimeoutError:
            raise self._deadline_exceeded(method_path) from None

    def _deadline_message(self, method_path: str) -> str:
        return f"deadline exceeded before {method_path} answered over the lane to {self.address}"

    def _deadline_exceeded(self, method_path: str) -> TransportError:
        return _failed(grpc.StatusCode.DEADLINE_EXCEEDED, self._deadline_message(method_path))

    def _expire(self, connection: _Connection, stream_id: int, method_path: str) -> None:
        """The deadline timer: fail the call and tell the server to stop working on it."""
        connection.give_up(
            stream_id, grpc.StatusCode.DEADLINE_EXCEEDED, self._deadline_message(method_path)
        )

    async def _connect(self, method_path: str, deadline: Deadline | None) -> _Connection:
        if self._closed:
            raise Unreached(f"the lane client for {self.address} is closed")
        task = self._connecting
        if task is None:
            task = self._connecting = asyncio.get_running_loop().create_task(self._open())
            task.add_done_callback(_retrieve)
        # Shielded: a caller that gives up must not cancel the attempt other callers share.
        if deadline is None:
            return await asyncio.shield(task)
        try:
            async with asyncio.timeout(deadline.remaining()):
                return await asyncio.shield(task)
        except TimeoutError:
            raise self._deadline_exceeded(method_path) from None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        context, server_name = None, None
        if self._tls is not None and self._server is not None:
            context, server_name = self._tls.client_context(), self._server.dns_name
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self.address, self._max_message_bytes),
                    self._host,
                    self._port,
                    ssl=context,
                    server_hostname=server_name,
                )
        except OSError as exc:  # refused, unreachable, the TLS handshake, or the connect timeout
            raise Unreached(f"cannot reach the lane at {self.address}: {exc!r}") from exc
        finally:
            self._connecting = None
        if self._closed:
            connection.close()
            raise Unreached(f"the lane client for {self.address} is closed")
        self._connection = connection
        self.connected = True
        return connection

    async def close(self, grace: float | None = None) -> None:
        """Take no new calls, give those out ``grace`` seconds to end, then close. Safe twice.

        New calls raise :class:`~runtime.transport.Unreached` at once (the module client sends them
        over gRPC); calls still out after ``grace`` (None or 0: none) fail with
        :class:`~runtime.transport.Disconnected`. A worker that no longer reads is cut off after a
        second rather than waited for.
        """
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if grace and (connection.pending or connection.streams) and not connection.lost:
            connection.idle = connection.loop.create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await connection.idle
        details = f"the lane client for {self.address} was closed"
        connection.fail_all(lambda: Disconnected(details))
        connection._release()  # calls waiting for the worker to read go elsewhere
        await shut([connection], _CLOSE_SECONDS)

    async def __aenter__(self) -> LaneClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _retrieve(task: asyncio.Task[_Connection]) -> None:
    """Mark a connect attempt's failure as seen: every caller may have given up on it already."""
    if not task.cancelled():
        task.exception()
