"""The worker's end of the lane: frames in, one task per request, frames out.

Each connection is an :class:`asyncio.Protocol` (no streams: their per-read futures cost more
than the call itself). A REQUEST frame starts a task calling the served :class:`~runtime.transport.Transport`;
its RESPONSE or STATUS is written with one ``transport.write``. A CANCEL frame, or the connection
going away, cancels the task, and a cancelled call sends nothing: nobody is waiting for it.

An OPEN frame starts a streaming call the same way: its task reads the served
:class:`~runtime.transport.StreamCall` and writes each response message within the client's
credit, and the request messages the client sends (within this end's credit) are what the
served stream reads. A stream holds its call slot until it ends.

A connection runs at most ``max_concurrent_calls`` calls at once (the lane's counterpart of
HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS); further requests wait, in order, and start as calls
end. It stops reading while its answers are not being read (the transport's high-water mark),
while more requests wait than may run, or while the waiting requests hold more than
``max_buffered_bytes``, so nothing piles up without bound; until then it keeps reading, so a
CANCEL reaches a waiting or running call at once (waiting requests are found by stream id, not
by scanning the queue).

Every bound of :class:`LaneLimits` holds against a peer that misbehaves as well as one that is
merely slow: past ``max_connections`` a new connection is closed as it arrives; a connection
that sends no whole frame within ``handshake_timeout``, or stops half-way through a frame for
that long, is cut off (a half-sent frame is never kept); one with no call for ``idle_timeout``
is closed; one that does not read its answers once they pass ``max_buffered_bytes`` is cut off.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import grpc

from runtime.config import LimitsSettings
from runtime.deadline import Deadline
from runtime.identity import Peer, current_peer
from runtime.lane._flow import Credit, Inbound
from runtime.lane._frames import (
    CANCEL,
    DEFAULT_MAX_MESSAGE_BYTES,
    HALF,
    MESSAGE,
    METADATA_ALLOWANCE,
    OPEN,
    REQUEST,
    WINDOW,
    Frame,
    FrameError,
    FrameReader,
    Oversized,
    Request,
    decode_request,
    decode_window,
    encode_end,
    encode_message,
    encode_refused,
    encode_response,
    encode_status,
    encode_window,
    too_large,
)
from runtime.lane._protocol import FramedProtocol, keep_alive, shut
from runtime.tls import InternalTls, peer_of_ssl
from runtime.transport import CallError, Transport

__all__ = ["LaneLimits", "LaneServer", "lane_limits"]

log = logging.getLogger("modrpc.lane")

_INTERNAL = grpc.StatusCode.INTERNAL.value[0]
_RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
_DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
_FLUSH_SECONDS = 1.0
"""How long :meth:`LaneServer.stop` lets a connection flush its last answers before cutting it."""
DEFAULT_MAX_CONCURRENT_CALLS = 1024
"""Calls one connection may have running before further requests wait for one to end."""
_REFUSALS_LOGGED_EVERY = 1000
"""Connections refused past the limit are logged once, then once per this many."""
_HANDSHAKE_REFUSALS_LOG_SECONDS = 10.0
"""At most one log line per this many seconds about refused TLS handshakes (with their count)."""


@dataclass(frozen=True, slots=True)
class LaneLimits:
    """What one lane server accepts (the lane's part of :class:`~runtime.config.LimitsSettings`)."""

    max_connections: int = 1000
    """Connections open at once; a further one is closed as it arrives."""
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS
    """Calls one connection runs at once; further requests wait, in order."""
    max_buffered_bytes: int = 64 * 1024 * 1024
    """Bytes one connection may hold: waiting requests (then it stops reading), unread answers
    (then it is cut off)."""
    handshake_timeout: float = 10.0
    """Seconds for a new connection's first whole frame, and for any frame to finish arriving."""
    idle_timeout: float = 300.0
    """Seconds a connection may go with no call running or waiting before it is closed."""
    keepalive_time: float = 60.0
    keepalive_timeout: float = 20.0
    """TCP keepalive: a connection silent for ``keepalive_time`` is probed, and dropped when a
    probe goes unanswered for ``keepalive_timeout`` (a client host that vanished)."""

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_concurrent_calls", "max_buffered_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("handshake_timeout", "idle_timeout", "keepalive_time", "keepalive_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0 seconds, not {getattr(self, name)}")


def lane_limits(settings: LimitsSettings, *, max_connections: int | None = None) -> LaneLimits:
    """The lane's limits from the configured ones; ``max_connections``: the process's budget for
    this server when it is lower than the setting (see :func:`runtime.limits.connection_budget`)."""
    return LaneLimits(
        max_connections=min(max_connections or settings.max_connections, settings.lane_max_connections),
        max_concurrent_calls=settings.lane_max_concurrent_calls,
        max_buffered_bytes=settings.max_buffered_bytes,
        handshake_timeout=settings.handshake_timeout,
        idle_timeout=settings.idle_timeout,
        keepalive_time=settings.keepalive_time,
        keepalive_timeout=settings.keepalive_timeout,
    )


class _Stream:
    """The server's side of one streaming call: the messages the client sent and the credit."""

    __slots__ = ("credit", "inbound")

    def __init__(self, max_message_bytes: int) -> None:
        self.inbound = Inbound(max_message_bytes)
        self.credit = Credit()


class _Connection(FramedProtocol):
    """One client connection: its reader and the tasks of its requests still running."""

    def __init__(self, server: LaneServer) -> None:
        super().__init__()
        self._server = server
        self._reader = FrameReader(server.max_message_bytes + METADATA_ALLOWANCE)
        # A client never reuses a stream id that is still open (a REQUEST for one is a protocol
        # error), so a task's entry can be dropped by stream id alone.
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.streams: dict[int, _Stream] = {}
        """The streaming calls, running or waiting, by stream id (their messages may arrive
        before they start: they wait with them, within the credit)."""
        self._waiting: collections.OrderedDict[int, tuple[bytes, float, bool]] = collections.OrderedDict()
        """Requests and OPENs (stream id → body, when read, whether it streams) read while
        ``max_concurrent_calls`` were running, in the order read; by stream id, so a CANCEL finds
        its request without a scan."""
        self._waiting_bytes = 0
        self._write_paused = False
        self.opened_at = self.active_at = time.monotonic()
        """When it connected; when it last read a byte or ended a call (for the idle timeout)."""
        self.framed = False
        """Whether a whole frame has arrived (for the handshake timeout)."""
        self.reading_paused = False
        """Whether this side stopped reading (:meth:`_pace`): the rest of a frame cannot arrive."""
        self.peer: Peer | None = None
        """Who the client's certificate says it is (None on a plaintext lane)."""
        self._handshaking = False
        self._early: list[bytes] = []
        """Bytes that arrived after the TLS handshake, before its task resumed (see ``_secure``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        server = self._server
        if server._stopping:  # accepted just as the server stopped: nobody will serve it
            transport.abort()
            return
        if len(server._connections) >= server.limits.max_connections:
            server._refuse(transport)
            return
        server._connections.add(self)
        limits = server.limits
        keep_alive(transport, idle=limits.keepalive_time, interval=limits.keepalive_timeout, probes=1)
        if server.tls is not None:
            self._handshaking = True
            handshake = asyncio.get_running_loop().create_task(self._secure(transport, server.tls))
            server._handshakes.add(handshake)
            handshake.add_done_callback(server._handshakes.discard)

    async def _secure(self, raw: asyncio.Transport, tls: InternalTls) -> None:
        """The TLS handshake; the connection serves only once it proved who is calling."""
        loop = asyncio.get_running_loop()
        try:
            secured = await loop.start_tls(
                raw, self, tls.server_context(), server_side=True,
                ssl_handshake_timeout=self._server.limits.handshake_timeout,
            )  # fmt: skip
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            self._server._refused_handshake(raw.get_extra_info("peername"), exc)
            raw.abort()
            return
        if secured is None or self._server._stopping:
            if secured is not None:
                secured.abort()
            return
        self._transport = secured
        self.peer = peer_of_ssl(secured.get_extra_info("ssl_object"))
        self._handshaking = False
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    @property
    def partial(self) -> bool:
        """Whether a frame has begun to arrive and not finished."""
        return self._reader.partial

    @property
    def frame_began(self) -> float:
        """When the frame now half-read began to arrive, or reading resumed with it half-read
        (a frame must arrive whole within the handshake timeout, however it trickles)."""
        return self._reader.began

    @property
    def idle(self) -> bool:
        """No call running or waiting, and no frame half-read."""
        return not self.tasks and not self._waiting and not self._reader.partial

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        super().connection_lost(exc)
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()
        for stream in self.streams.values():
            stream.credit.close()
        self.streams.clear()
        self._waiting.clear()
        self._waiting_bytes = 0

    def pause_writing(self) -> None:
        # The client is not reading its answers: take no new requests from it until it does,
        # so answers cannot pile up in this process without bound.
        log.debug("lane connection paused writing: not reading requests until it drains")
        self._write_paused = True
        self._pace()

    def resume_writing(self) -> None:
        log.debug("lane connection resumed writing")
        self._write_paused = False
        self._pace()

    def _pace(self) -> None:
        """Read requests only while answers drain, and no more requests (nor bytes) wait than may."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        limits = self._server.limits
        if (
            self._write_paused
            or len(self._waiting) > limits.max_concurrent_calls
            or self._waiting_bytes > limits.max_buffered_bytes
        ):
            transport.pause_reading()  # both are no-ops when already in that state
            self.reading_paused = True
        else:
            if self.reading_paused and self._reader.partial:
                self._reader.began = time.monotonic()  # its rest could not arrive meanwhile
            transport.resume_reading()
            self.reading_paused = False

    def data_received(self, data: bytes) -> None:
        if self._handshaking:  # TLS is up, but _secure has not taken the transport yet
            self._early.append(data)
            return
        self.active_at = time.monotonic()
        try:
            frames = self._reader.feed(data)
        except FrameError as exc:
            log.warning("closing a lane connection that sent a malformed frame: %s", exc)
            self.close()
            return
        if frames:
            self.framed = True
        for frame in frames:
            kind = frame.kind
            if kind == MESSAGE or kind == HALF or kind == WINDOW:
                problem = self._on_stream_frame(frame)
                if problem is not None:
                    self._protocol_error(problem)
                    return
            elif kind == REQUEST or kind == OPEN:
                stream_id = frame.stream_id
                if isinstance(frame, Oversized):
                    message = too_large("request frame", frame.length, self._reader.max_body)
                    self._send(encode_status(stream_id, _RESOURCE_EXHAUSTED, message, ()))
                    continue
                if stream_id in self.tasks or stream_id in self._waiting or stream_id in self.streams:
                    self._protocol_error(f"a request reused stream id {stream_id}, still open")
                    return
                if kind == OPEN:
                    self.streams[stream_id] = _Stream(self._server.max_message_bytes)
                if self._waiting or len(self.tasks) >= self._server.limits.max_concurrent_calls:
                    self._waiting[stream_id] = (frame.body, time.monotonic(), kind == OPEN)
                    self._waiting_bytes += len(frame.body)
                    self._pace()
                else:
                    self._start(stream_id, frame.body, streams=kind == OPEN)
            elif frame.kind == CANCEL and not isinstance(frame, Oversized):
                task = self.tasks.get(frame.stream_id)
                if task is not None:
                    task.cancel()  # its end makes room for a waiting request
                else:  # a request that never started is dropped, unanswered; else nothing to do
                    self._drop_stream(frame.stream_id)
                    dropped = self._waiting.pop(frame.stream_id, None)
                    if dropped is not None:
                        self._waiting_bytes -= len(dropped[0])
                        self._pace()
            else:  # a client never sends RESPONSE, STATUS or REFUSED, nor an oversized CANCEL
                self._protocol_error(f"a client sent a frame of kind {frame.kind}")
                return

    def _send(self, frame: bytes) -> None:
        """Write ``frame``; a peer that leaves more than ``max_buffered_bytes`` unread is cut off."""
        self.write_frame(frame)
        transport = self._transport
        if transport is None:
            return
        limit = self._server.limits.max_buffered_bytes
        if transport.get_write_buffer_size() > limit:
            log.warning(
                "cutting off a lane connection that left %d bytes of answers unread (limit %d)",
                transport.get_write_buffer_size(), limit,
            )  # fmt: skip
            self.abort()

    def _on_stream_frame(self, frame: Frame | Oversized) -> str | None:
        """A MESSAGE, HALF or WINDOW frame; what is wrong with it when the connection must close.

        A frame for a stream that has ended is dropped: it crossed the stream's end on the way.
        """
        stream_id = frame.stream_id
        stream = self.streams.get(stream_id)
        if stream is None:
            return None
        if isinstance(frame, Oversized) or (frame.kind == MESSAGE and len(frame.body) > self._server.max_message_bytes):
            size = frame.length if isinstance(frame, Oversized) else len(frame.body)
            message = too_large("request message", size, self._server.max_message_bytes)
            self._send(encode_status(stream_id, _RESOURCE_EXHAUSTED, message, ()))
            self._drop_stream(stream_id)
            task = self.tasks.get(stream_id)
            if task is not None:
                task.cancel()
            return None
        if frame.kind == MESSAGE:
            if not stream.inbound.received(frame.body):
                return f"a client sent past its credit on stream {stream_id}"
        elif frame.kind == HALF:
            stream.inbound.queue.finish()
        else:
            try:
                stream.credit.grant(decode_window(frame.body))
            except FrameError as exc:
                return str(exc)
        return None

    def _drop_stream(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.credit.close()

    def _protocol_error(self, reason: str) -> None:
        log.warning("closing a lane connection: %s", reason)
        self.close()

    def _start(self, stream_id: int, body: bytes, read_at: float | None = None, streams: bool = False) -> None:
        """Start the call of a REQUEST (or, ``streams``, an OPEN) body; ``read_at``: when it was
        read, if it waited since."""
        stream = self.streams.get(stream_id) if streams else None
        if streams and stream is None:
            return  # dropped while it waited for a call slot
        try:
            request = decode_request(body)
        except FrameError as exc:
            self._drop_stream(stream_id)
            self._send(encode_status(stream_id, _INTERNAL, f"malformed lane request: {exc}", ()))
            return
        if read_at is not None and request.timeout is not None:
            left = request.timeout - (time.monotonic() - read_at)  # the wait counts against it
            if left <= 0:
                message = f"deadline exceeded while {request.method} waited for a free call slot"
                self._drop_stream(stream_id)
                self._send(encode_status(stream_id, _DEADLINE_EXCEEDED, message, ()))
                return
            request = request._replace(timeout=left)
        limit = self._server.max_message_bytes
        if len(request.payload) > limit:
            message = too_large("request message", len(request.payload), limit)
            self._send(encode_status(stream_id, _RESOURCE_EXHAUSTED, message, ()))
            return
        if self._server._stopping:  # never started: the client may send it elsewhere
            self._drop_stream(stream_id)
            self._send(encode_refused(stream_id, "the lane server is stopping"))
            return
        loop = asyncio.get_running_loop()
        if stream is not None:
            self.tasks[stream_id] = loop.create_task(self._serve_stream(stream_id, request, stream))
        else:
            self.tasks[stream_id] = loop.create_task(self._serve(stream_id, request))

    def _ended(self, stream_id: int) -> None:
        """A call ended (answered or cancelled): a waiting request takes its place."""
        self.tasks.pop(stream_id, None)
        self._drop_stream(stream_id)
        self.active_at = time.monotonic()
        if not self._waiting or self._transport is None:
            return
        limit = self._server.limits.max_concurrent_calls
        while self._waiting and len(self.tasks) < limit:  # one not started (malformed) makes room
            waiting_id, (body, read_at, streams) = self._waiting.popitem(last=False)
            self._waiting_bytes -= len(body)
            self._start(waiting_id, body, read_at, streams)
        self._pace()

    async def _serve(self, stream_id: int, request: Request) -> None:
        current_peer.set(self.peer)  # this call's own task: nothing to reset
        try:
            deadline = None if request.timeout is None else Deadline.after(request.timeout)
            payload, metadata = await self._server._served.unary(
                request.method, request.payload, request.metadata, deadline
            )
            frame = encode_response(stream_id, metadata, payload)
        except CallError as abort:
            try:
                frame = encode_status(
                    stream_id, abort.code.value[0], abort.details, abort.trailing_metadata
                )
            except FrameError as exc:  # e.g. a trailing value neither text nor bytes
                log.error("lane call %s: its status cannot be framed: %s", request.method, exc)
                frame = encode_status(stream_id, _INTERNAL, "internal error", ())
        except Exception:
            # The endpoint's bug (or a response that cannot be framed): the details go to the
            # log, the caller gets a generic status.
            log.exception("lane call %s failed", request.method)
            frame = encode_status(stream_id, _INTERNAL, "internal error", ())
        finally:
            self._ended(stream_id)
        self._send(frame)

    async def _serve_stream(self, stream_id: int, request: Request, stream: _Stream) -> None:
        """Serve one streaming call: response messages out within the client's credit, then END
        or STATUS; cancelled (CANCEL, the connection lost), it closes the served call and sends
        nothing. The connection's certified identity is the call's peer, as for a unary call."""
        current_peer.set(self.peer)  # this call's own task (and the stream's, started below)
        deadline = None if request.timeout is None else Deadline.after(request.timeout)
        call = self._server._served.stream(request.method, self._requests(stream_id, stream), request.metadata, deadline)
        limit = self._server.max_message_bytes
        try:
            async for message in call:
                if len(message) > limit:
                    log.error("lane stream %s: a response message of %d bytes is past the limit", request.method, len(message))
                    frame = encode_status(stream_id, _RESOURCE_EXHAUSTED, too_large("response message", len(message), limit), ())
                    break
                if not await stream.credit.spend(len(message)):
                    return  # the stream was dropped meanwhile
                self._send(encode_message(stream_id, message))
            else:
                frame = encode_end(stream_id, call.trailers)
        except CallError as abort:
            try:
                frame = encode_status(stream_id, abort.code.value[0], abort.details, abort.trailing_metadata)
            except FrameError as exc:
                log.error("lane stream %s: its status cannot be framed: %s", request.method, exc)
                frame = encode_status(stream_id, _INTERNAL, "internal error", ())
        except Exception:
            log.exception("lane stream %s failed", request.method)
            frame = encode_status(stream_id, _INTERNAL, "internal error", ())
        finally:
            await call.aclose()
            self._ended(stream_id)
        self._send(frame)

    async def _requests(self, stream_id: int, stream: _Stream) -> AsyncIterator[bytes]:
        """The request messages of a stream as the served call reads them, credit granted back."""
        inbound = stream.inbound
        queue = inbound.queue
        while True:
            message = queue.get_nowait()
            if message is None:
                try:
                    message = await queue.get()
                except StopAsyncIteration:
                    return
            self.active_at = time.monotonic()
            grant = inbound.consumed(message)
            if grant and stream_id in self.streams:
                self._send(encode_window(stream_id, grant))
            yield message


class LaneServer:
    """Serves one :class:`~runtime.transport.Transport` to lane clients on a TCP port.

    server = LaneServer(service.transport, host="127.0.0.1")
    address = await server.start()          # "127.0.0.1:40123"
    ...
    await server.stop(grace=5.0)
    """

    def __init__(
        self,
        served: Transport,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_concurrent_calls: int | None = None,
        limits: LaneLimits | None = None,
        tls: InternalTls | None = None,
    ) -> None:
        limits = limits or LaneLimits()
        if max_concurrent_calls is not None:  # LaneLimits checks it
            limits = replace(limits, max_concurrent_calls=max_concurrent_calls)
        self._served = served
        self._host = host
        self._port = port
        self.max_message_bytes = max_message_bytes
        self.limits = limits
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False
        self._address: str | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.refused = 0
        """Connections closed on arrival because ``max_connections`` were open."""
        self.timed_out = 0
        """Connections cut off by the handshake or idle timeout."""
        self.tls = tls
        self._handshakes: set[asyncio.Task[None]] = set()
        self.tls_refused = 0
        """Connections refused at the TLS handshake (no certificate, another CA, expired...)."""
        self._tls_refusal_logged = -_HANDSHAKE_REFUSALS_LOG_SECONDS

    def _refused_handshake(self, peer: object, exc: BaseException) -> None:
        self.tls_refused += 1
        now = time.monotonic()
        if now - self._tls_refusal_logged >= _HANDSHAKE_REFUSALS_LOG_SECONDS:
            log.warning(
                "lane %s refused a connection from %s at the TLS handshake: %s (%d refused so far)",
                self._address, peer, exc or type(exc).__name__, self.tls_refused,
            )  # fmt: skip
            self._tls_refusal_logged = now

    @property
    def max_concurrent_calls(self) -> int:
        return self.limits.max_concurrent_calls

    def _refuse(self, transport: asyncio.Transport) -> None:
        """Close a connection past ``max_connections`` at once: it costs one accept, no more."""
        transport.abort()
        self.refused += 1
        if self.refused % _REFUSALS_LOGGED_EVERY == 1:
            log.warning(
                "lane on %s has %d connections open, its limit: refused a new one (%d so far)",
                self._address, len(self._connections), self.refused,
            )  # fmt: skip

    async def _sweep(self) -> None:
        """Cut off connections past the handshake timeout and close idle ones, a few times per
        timeout (one timer for the server, not one per connection)."""
        limits = self.limits
        tick = min(1.0, max(0.01, min(limits.handshake_timeout, limits.idle_timeout) / 4))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for connection in list(self._connections):
                quiet = now - connection.active_at
                if connection.partial and not connection.reading_paused:
                    late = now - connection.frame_began > limits.handshake_timeout
                    what = "took longer to send one frame than"
                else:
                    late = quiet > limits.handshake_timeout and not connection.framed
                    what = "sent no whole frame within"
                if late:
                    log.warning("cutting off a lane connection that %s %.0fs", what, limits.handshake_timeout)
                    self.timed_out += 1
                    connection.abort()  # a half-sent frame is dropped, never kept
                elif quiet > limits.idle_timeout and connection.idle:
                    log.debug("closing a lane connection idle for %.0fs", quiet)
                    self.timed_out += 1
                    connection.close()

    @property
    def address(self) -> str:
        """``host:port`` the server listens on; only after :meth:`start`."""
        if self._address is None:
            raise RuntimeError("the lane server has not started")
        return self._address

    @property
    def connections(self) -> int:
        """Client connections open now (one per gateway, normally)."""
        return len(self._connections)

    async def start(self) -> str:
        """Listen, and return ``host:port`` (the port chosen when 0 was asked for)."""
        if self._server is not None:
            raise RuntimeError("the lane server has started already")
        loop = asyncio.get_running_loop()
        self._stopping = False
        self._server = await loop.create_server(lambda: _Connection(self), self._host, self._port)
        port = self._server.sockets[0].getsockname()[1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._address = f"{host}:{port}"
        self._sweeper = loop.create_task(self._sweep(), name="modrpc-lane-sweep")
        return self._address

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting; let calls in flight finish for up to ``grace`` seconds (None: none
        may), cancel the rest, and close every connection. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
        for handshake in list(self._handshakes):
            handshake.cancel()
        tasks = [t for c in self._connections for t in c.tasks.values()]
        if tasks and grace:
            await asyncio.wait(tasks, timeout=grace)
        for connection in list(self._connections):
            for task in connection.tasks.values():
                task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await shut(list(self._connections), _FLUSH_SECONDS)  # answers queued still go out
        await server.wait_closed()

    async def __aenter__(self) -> LaneServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
