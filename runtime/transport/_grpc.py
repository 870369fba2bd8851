"""The call contract over gRPC: a client :class:`GrpcTransport`, and the server-side adapter.

This is the one place that touches grpc.aio's call objects: an ``AioRpcError`` becomes a
:class:`~runtime.transport.CallError` here and nowhere else. A status that grpc's own transport
made up because no server answered ("failed to connect to all addresses; ipv4:10.0.3.7:50061")
becomes :class:`~runtime.transport.Unreached`, and a connection lost mid-call
:class:`~runtime.transport.Disconnected`: a modrpc server returns ``x-request-id`` with every
status it sends, which is how the two are told apart.

    transport = GrpcTransport("127.0.0.1:50061")
    body, trailers = await transport.unary("/users.v1.UsersService/GetUser", payload, [], None)
    await transport.close(grace=5.0)

On the server side, :func:`unary_handler` turns an endpoint of the same shape (bytes, metadata
and deadline in; bytes and trailers out; :class:`CallError` for a status) into a grpc.aio method
handler, so a worker serves gRPC, the lane and in-process calls with the same endpoint;
:func:`stream_handler` does the same for a streaming endpoint (request messages, metadata and
deadline in; a :class:`~runtime.transport.StreamCall` out).

Streams use grpc.aio's reader/writer calls on both sides, so each message waits for HTTP/2 flow
control: a gRPC peer that reads slowly holds up the writer, and through it whatever produces.

Between runtime processes both ends use mutual TLS (:class:`~runtime.tls.InternalTls`): the
client presents its certificate and checks the server's names the identity it expects, and the
server hands the caller's identity to the endpoint as :data:`~runtime.identity.current_peer`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from typing import cast

import grpc
import grpc.aio
from grpc._cython import cygrpc  # type: ignore[attr-defined]  # the error a failed write raises (grpc.aio catches it too)

from runtime.deadline import Deadline
from runtime.identity import Peer, current_peer
from runtime.status import REQUEST_ID_KEY, RpcStatus
from runtime.tls import InternalTls, peer_of_grpc
from runtime.transport._contract import (
    CallError,
    Disconnected,
    Metadata,
    MetadataIn,
    Reply,
    StreamCall,
    TransportError,
    Unreached,
)
from runtime.transport._stream import request_failed

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Endpoint",
    "GrpcTransport",
    "StreamEndpoint",
    "call_error",
    "channel_options",
    "stream_handler",
    "unary_handler",
    "until_half_closed",
]

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""gRPC's own default limit; a configured limit should be passed instead."""

ChannelOptions = Sequence[tuple[str, int | str]]

Endpoint = Callable[[bytes, MetadataIn, Deadline | None], Awaitable[Reply]]
"""One served method: ``(payload, metadata, deadline) -> (response bytes, trailers)``."""

StreamEndpoint = Callable[[AsyncIterable[bytes], MetadataIn, "Deadline | None"], StreamCall]
"""One served streaming method: ``(request messages, metadata, deadline) -> StreamCall``."""


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, *, separate: bool = False) -> ChannelOptions:
    """Options for a channel to a worker.

    Keepalive pings every 60 s notice a dead peer behind a silent NAT or load balancer; they
    stop after two pings with no data, which stays inside the ping policy of a default gRPC
    server. grpc's own retries are off: the module client retries, within a budget and only
    what may be retried. ``separate`` gives the channel its own connection instead of sharing
    one with other channels to the same address, which is the point of several channels.
    grpc's window growth is off, so a worker's stream answers that the caller is not reading
    pile up at most a window (64 KiB) in the caller, not megabytes.
    """
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 2),
        ("grpc.enable_retries", 0),
        ("grpc.http2.bdp_probe", 0),
    ]
    if separate:
        options.append(("grpc.use_local_subchannel_pool", 1))
    return options


def call_error(exc: grpc.aio.AioRpcError) -> CallError:
    """The contract's error for a failed grpc.aio call (the one translation from grpc).

    UNAVAILABLE and DEADLINE_EXCEEDED without ``x-request-id`` were made by grpc's own transport,
    not sent by a modrpc server: no server answered (and the text may name addresses). So was a
    CANCELLED without it: this side's own cancellations raise ``asyncio.CancelledError``, not a
    status, so the server's gRPC layer dropped the call (a server shutting down cancels the calls
    it had not started, and those still running at the end of its grace). The call may or may
    not have run: :class:`Disconnected`, never a CANCELLED passed on to a caller who cancelled
    nothing.
    """
    code = exc.code()
    trailing: Metadata = tuple(exc.trailing_metadata() or ())  # type: ignore[arg-type]
    details = exc.details() or ""
    if code in _TRANSPORT_CODES and all(key != REQUEST_ID_KEY for key, _ in trailing):
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return TransportError(RpcStatus(code, details))
        if code == grpc.StatusCode.CANCELLED:
            return Disconnected(f"the server cancelled the call ({details})")
        if "failed to connect" in details:
            return Unreached(details)
        return Disconnected(details)
    return CallError(RpcStatus(code, details, trailing))


_TRANSPORT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


class GrpcTransport:
    """Unary calls over grpc.aio channels to one address, used in turn; raw bytes both ways.

    Channels are created on the first call (building one needs no event loop). Several
    channels (``channels`` > 1) each get their own connection. With ``tls`` the channels are
    mutual TLS: this process's certificate, and the server must hold ``server``'s.
    """

    __slots__ = (
        "_callables", "_channels", "_closed", "_count", "_generation", "_next", "_options", "_retiring", "_streams",
        "_tls", "address",
    )  # fmt: skip

    def __init__(
        self,
        address: str,
        *,
        channels: int = 1,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: InternalTls | None = None,
        server: Peer | None = None,
    ) -> None:
        if channels < 1:
            raise ValueError("channels must be at least 1")
        if tls is not None and server is None:
            raise ValueError("a TLS transport needs the identity the server must prove (server=)")
        self.address = address
        self._count = channels
        options = list(channel_options(max_message_bytes, separate=channels > 1))
        if tls is not None and server is not None:
            options += tls.channel_options(server)
        self._options = options
        self._tls = tls
        self._generation = 0
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        self._channels: list[grpc.aio.Channel] = []
        self._callables: list[dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]]] = []
        self._streams: list[dict[str, grpc.aio.StreamStreamMultiCallable[bytes, bytes]]] = []
        self._next = 0

    def _open(self) -> None:
        tls = self._tls
        if tls is not None:
            self._generation = tls.keys.current_generation()
        for _ in range(self._count):
            if tls is None:
                channel = grpc.aio.insecure_channel(self.address, options=self._options)
            else:  # the files as they are now: a rotated certificate is used by new channels
                channel = grpc.aio.secure_channel(self.address, tls.channel_credentials(), options=self._options)
            self._channels.append(channel)
            self._callables.append({})
            self._streams.append({})

    def _index(self) -> int:
        index = self._next % self._count
        self._next = index + 1
        return index

    def _renew(self) -> None:
        """This process's certificate was replaced on disk: new channels present the new one,
        and calls still out on the old channels get a few seconds to finish."""
        old, self._channels = self._channels, []
        self._callables = []
        self._streams = []
        self._open()
        task = asyncio.get_running_loop().create_task(_close_all(old, _RENEW_GRACE_SECONDS))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _ready(self) -> int:
        """The index of the channel the next call takes, channels opened (or renewed) as needed."""
        tls = self._tls
        if tls is not None and self._channels and tls.keys.current_generation() != self._generation:
            self._renew()
        if not self._channels:
            if self._closed:
                raise Unreached(f"the gRPC transport to {self.address} is closed")
            self._open()
        return self._index()

    def _callable(self, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        index = self._ready()
        cache = self._callables[index]
        unary = cache.get(method)
        if unary is None:
            # No serializers: payloads are bytes on both sides and nothing is decoded here.
            unary = cache[method] = self._channels[index].unary_unary(
                method, request_serializer=None, response_deserializer=None
            )
        return unary

    async def unary(self, method: str, payload: bytes, metadata: MetadataIn, deadline: Deadline | None) -> Reply:
        timeout = None if deadline is None else deadline.remaining()
        call = self._callable(method)(payload, timeout=timeout, metadata=tuple(metadata) or None)
        try:
            response: bytes = await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as exc:
            raise call_error(exc) from exc
        except asyncio.CancelledError:
            call.cancel()  # the caller gave up: so does the RPC, and the server sees it
            raise
        return response, tuple(trailing or ())

    def stream(
        self, method: str, requests: AsyncIterable[bytes], metadata: MetadataIn, deadline: Deadline | None
    ) -> StreamCall:
        """A streaming call of any shape, as grpc's stream-stream call (the wire is the same)."""
        index = self._ready()
        cache = self._streams[index]
        multicallable = cache.get(method)
        if multicallable is None:
            multicallable = cache[method] = self._channels[index].stream_stream(
                method, request_serializer=None, response_deserializer=None
            )
        timeout = None if deadline is None else deadline.remaining()
        # No request iterator: _GrpcStream writes the messages itself, at the pace grpc takes them.
        call = multicallable(timeout=timeout, metadata=tuple(metadata) or None)  # type: ignore[call-arg]  # optional at run time
        return _GrpcStream(call, requests)

    async def close(self, grace: float | None = None) -> None:
        """Close the channels; calls in flight get ``grace`` seconds (None: cancelled). Safe twice."""
        self._closed = True
        channels, self._channels = self._channels, []
        self._callables = []
        self._streams = []
        await asyncio.gather(_close_all(channels, grace), *self._retiring)


_RENEW_GRACE_SECONDS = 5.0


async def _close_all(channels: Sequence[grpc.aio.Channel], grace: float | None) -> None:
    await asyncio.gather(*(channel.close(grace) for channel in channels))


class _GrpcStream:
    """A grpc.aio stream-stream call as a :class:`~runtime.transport.StreamCall`.

    A task of its own writes the request messages, one ``write`` at a time (each waits for
    HTTP/2 flow control), then half-closes; the reader reads the responses.
    """

    __slots__ = ("_call", "_failed", "_pump", "_trailers")

    def __init__(self, call: grpc.aio.StreamStreamCall[bytes, bytes], requests: AsyncIterable[bytes]) -> None:
        self._call = call
        self._failed: BaseException | None = None
        self._trailers: Metadata = ()
        self._pump = asyncio.get_running_loop().create_task(self._send(requests))

    async def _send(self, requests: AsyncIterable[bytes]) -> None:
        call = self._call
        try:
            async for message in requests:
                if not await _write(call, message):
                    return  # the call ended first: reading the responses tells how
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return  # the call ended first: reading the responses tells how
        except Exception as exc:  # the request iterator failed: the call is given up
            self._failed = exc
            call.cancel()

    def __aiter__(self) -> _GrpcStream:
        return self

    async def __anext__(self) -> bytes:
        call = self._call
        try:
            message = await call.read()
        except grpc.aio.AioRpcError as exc:
            self._pump.cancel()
            raise call_error(exc) from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._failed is not None and (task is None or not task.cancelling()):
                raise request_failed(self._failed) from None  # cancelled by the pump, not the reader
            call.cancel()  # the reader gave up: so does the RPC, and the server sees it
            self._pump.cancel()
            raise
        if message is grpc.aio.EOF:  # type: ignore[attr-defined]  # missing from grpc-stubs
            self._pump.cancel()
            try:
                self._trailers = tuple(await call.trailing_metadata() or ())
            except grpc.aio.AioRpcError as exc:
                raise call_error(exc) from exc
            raise StopAsyncIteration
        return cast(bytes, message)

    @property
    def trailers(self) -> Metadata:
        return self._trailers

    async def aclose(self) -> None:
        self._call.cancel()  # a no-op once the call has ended
        pump = self._pump
        if not pump.done():
            pump.cancel()
            await asyncio.wait((pump,))


WRITE_LOST_GRACE = 1.0
"""Seconds a write that failed waits for the status that ended the call before giving it up."""


async def _write(call: grpc.aio.StreamStreamCall[bytes, bytes], message: bytes) -> bool:
    """Write one request message of ``call``; False when the call has ended instead.

    grpc.aio's own ``write``, when the server's status arrives while a write is on its way (a
    server that refuses a request stream half-way while more of it is coming), replaces that
    status with its own ``INTERNAL: Internal error from Core`` (grpc/grpc#36066): the caller
    would hear INTERNAL instead of, say, INVALID_ARGUMENT naming the field. This write goes to
    the call's C layer the same way, but on that failure leaves the status to the server, and
    falls back to grpc's INTERNAL only when no status has come within :data:`WRITE_LOST_GRACE`
    (a batch core refused by itself, for which no status comes). It uses grpc.aio's private
    call state, so with a grpc.aio that lacks it, grpc's own ``write`` is used.
    """
    cython = getattr(call, "_cython_call", None)
    sent = getattr(call, "_metadata_sent", None)
    if cython is None or not isinstance(sent, asyncio.Event) or getattr(call, "_done_writing_flag", True):
        await call.write(message)
        return True
    if call.done():
        return False
    if not sent.is_set():
        await sent.wait()
        if call.done():
            return False
    try:
        await cython.send_serialized_message(message)
    except cygrpc.InternalError as exc:
        try:
            async with asyncio.timeout(WRITE_LOST_GRACE):
                await call.code()  # the status that ended the call, as the server sent it
        except TimeoutError:
            cython.set_internal_error(str(exc))  # what grpc.aio itself would have done at once
        return False
    return True


async def until_half_closed(requests: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """A gRPC caller's request messages, ending only if the caller half-closed its stream.

    grpc.aio ends a server's request iterator the same way whether the caller half-closed or
    hung up (its connection lost, or a reset without END_STREAM); the hang-up's cancellation
    reaches the call a little later, from grpc's own thread. Passed on as the end of the
    requests, a hang-up would let a client-streaming handler finish and commit a batch its caller
    abandoned. So at the end this waits for it: after a hang-up the call's task is cancelled
    here, and the stream is cancelled instead of half-closed. A stream that did half-close ends
    :data:`HANG_UP_GRACE` later.
    """
    async for message in requests:
        yield message
    await asyncio.sleep(HANG_UP_GRACE)


HANG_UP_GRACE = 0.01
"""Seconds a request stream's end waits for a hang-up's cancellation. grpc.aio delivers it from
its completion thread: usually within a loop turn or two (grpcio 1.85), but two turns missed it
about one time in seven on an idle 2-CPU machine, and a busy one takes longer."""


def stream_handler(endpoint: StreamEndpoint) -> grpc.RpcMethodHandler[bytes, bytes]:
    """A grpc.aio raw-bytes handler serving the streaming ``endpoint``, whatever its shape: the
    wire of a stream-stream call is that of every other kind, so one handler serves them all.

    Each response message is written with ``context.write``, which waits for the client's flow
    control; the endpoint's trailers go out with the OK status, and a :class:`CallError` ends the
    call with its status. Whichever way the call ends, the endpoint's call is closed, so the
    handler's cleanup has run by the time grpc finishes the RPC. The identity in the caller's TLS
    certificate is the call's :data:`~runtime.identity.current_peer`, as for a unary call.
    """

    async def handle(requests: AsyncIterable[bytes], context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        remaining = context.time_remaining()
        deadline = None if remaining is None else Deadline.after(remaining)
        current_peer.set(peer_of_grpc(context))  # this call's own task, and the stream's, inherit it
        metadata = cast(MetadataIn, context.invocation_metadata() or ())
        call = endpoint(until_half_closed(requests), metadata, deadline)
        try:
            async for message in call:
                await context.write(message)
        except CallError as exc:
            await context.abort_with_status(exc.status)  # type: ignore[attr-defined]  # missing from grpc-stubs
            raise  # abort_with_status raises; never reached
        finally:
            await call.aclose()
        context.set_trailing_metadata(call.trailers)

    return grpc.stream_stream_rpc_method_handler(handle)


def unary_handler(endpoint: Endpoint) -> grpc.RpcMethodHandler[bytes, bytes]:
    """A grpc.aio raw-bytes method handler serving ``endpoint``.

    grpc.aio's deadline becomes a :class:`~runtime.deadline.Deadline` here, once; the endpoint's
    trailers go back with the response, and a :class:`CallError` ends the call with its status.
    The identity in the caller's TLS certificate (none on a plaintext port) is the call's
    :data:`~runtime.identity.current_peer`.
    """

    async def handle(payload: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        remaining = context.time_remaining()
        deadline = None if remaining is None else Deadline.after(remaining)
        current_peer.set(peer_of_grpc(context))  # this call's own task: nothing to reset
        try:
            metadata = cast(MetadataIn, context.invocation_metadata() or ())
            response, trailing = await endpoint(payload, metadata, deadline)
        except CallError as exc:
            await context.abort_with_status(exc.status)  # type: ignore[attr-defined]  # missing from grpc-stubs
            raise  # abort_with_status raises; never reached
        context.set_trailing_metadata(trailing)
        return response

    return grpc.unary_unary_rpc_method_handler(handle)
