"""The caller's end of a streaming call over the lane (see ``_client.py`` for the connection).

A stream is an OPEN frame, then MESSAGE frames each way and the client's HALF; the server ends it
with END or STATUS. Each side sends only within the credit the other grants (``_flow.py``), so
the messages a slow reader has not read yet stay within one window per stream. The connection is
made before anything is taken from the request iterator, so a lane that cannot be reached leaves
the call untouched for gRPC to carry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING

import grpc

from runtime.deadline import Deadline
from runtime.lane._flow import Credit, Inbound
from runtime.lane._frames import (
    END,
    MESSAGE,
    REFUSED,
    STATUS,
    WINDOW,
    Frame,
    FrameError,
    Oversized,
    decode_end,
    decode_refused,
    decode_status,
    decode_window,
    encode_half,
    encode_message,
    encode_window,
    too_large,
)
from runtime.status import RpcStatus
from runtime.transport import (
    CallError,
    Metadata,
    MetadataIn,
    TransportError,
    Unreached,
    request_failed,
)

if TYPE_CHECKING:
    from runtime.lane._client import LaneClient, _Connection

__all__ = ["CODES", "LaneStream", "failed"]

CODES = {code.value[0]: code for code in grpc.StatusCode}
"""gRPC status codes by number, as frames carry them."""


def failed(code: grpc.StatusCode, details: str) -> TransportError:
    """A status this end made up (deadline, size, malformed answer): not the worker's answer."""
    return TransportError(RpcStatus(code, details))


class LaneStream:
    """One streaming call over a lane connection: a :class:`~runtime.transport.StreamCall`.

    The connection is made on the first read, before the request iterator is touched; then OPEN
    is written and a task of its own sends the request messages within the server's credit.
    """

    __slots__ = (
        "_client", "_connection", "_deadline", "_metadata", "_method", "_pump", "_requests", "_timer",
        "credit", "inbound", "started", "stream_id",
    )  # fmt: skip

    def __init__(
        self, client: LaneClient, method: str, requests: AsyncIterable[bytes], metadata: MetadataIn, deadline: Deadline | None
    ) -> None:
        self._client = client
        self._method = method
        self._requests = requests
        self._metadata = metadata
        self._deadline = deadline
        self._connection: _Connection | None = None
        self._pump: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.inbound = Inbound(client._max_message_bytes)
        self.credit = Credit()
        self.started = False
        """OPEN was written (the request iterator may have been read since)."""
        self.stream_id = 0

    def __aiter__(self) -> LaneStream:
        return self

    async def _start(self) -> _Connection:
        client, method, deadline = self._client, self._method, self._deadline
        connection = await client._ready_connection(method, deadline)
        timeout = None
        if deadline is not None:
            timeout = deadline.remaining()
            if timeout <= 0:
                raise client._deadline_exceeded(method)
        self.stream_id = connection.open(self, method, self._metadata, timeout)
        self._connection = connection
        self.started = True
        loop = connection.loop
        self._pump = loop.create_task(self._send(connection))
        if timeout is not None:
            self._timer = loop.call_later(timeout, self._expire)
        return connection

    async def __anext__(self) -> bytes:
        connection = self._connection
        if connection is None:
            connection = await self._start()
        queue = self.inbound.queue
        message = queue.get_nowait()
        if message is None:
            try:
                message = await queue.get()
            except asyncio.CancelledError:
                await self.aclose()
                raise
        grant = self.inbound.consumed(message)
        if grant and self.stream_id in connection.streams:
            connection.write_frame(encode_window(self.stream_id, grant))
        return message

    @property
    def trailers(self) -> Metadata:
        return self.inbound.queue.trailers

    async def _send(self, connection: _Connection) -> None:
        """Send the request messages within the server's credit, then HALF."""
        limit = self._client._max_message_bytes
        try:
            async for message in self._requests:
                if len(message) > limit:
                    self.give_up(failed(grpc.StatusCode.RESOURCE_EXHAUSTED, too_large("request message", len(message), limit)))
                    return
                if not await self.credit.spend(len(message)):
                    return  # the stream ended meanwhile
                connection.write_frame(encode_message(self.stream_id, message))
            if self.stream_id in connection.streams:
                connection.write_frame(encode_half(self.stream_id))
        except Exception as exc:  # the request iterator failed: the call is given up
            self.give_up(request_failed(exc))

    def on_frame(self, frame: Frame | Oversized) -> str | None:
        """A frame the server sent on this stream; what is wrong with it, when the connection
        cannot be trusted any more."""
        connection = self._connection
        assert connection is not None
        kind = frame.kind
        if isinstance(frame, Oversized):
            message = too_large("stream frame", frame.length, connection._reader.max_body)
            self.give_up(failed(grpc.StatusCode.RESOURCE_EXHAUSTED, message))
            return None
        try:
            if kind == MESSAGE:
                limit = self._client._max_message_bytes
                if len(frame.body) > limit:
                    message = too_large("response message", len(frame.body), limit)
                    self.give_up(failed(grpc.StatusCode.RESOURCE_EXHAUSTED, message))
                elif not self.inbound.received(frame.body):
                    return f"the server sent past its credit on stream {frame.stream_id}"
            elif kind == WINDOW:
                self.credit.grant(decode_window(frame.body))
            elif kind == END:
                connection.close_stream(self.stream_id, cancel=False)
                self.ended(None, decode_end(frame.body))
            elif kind == STATUS:
                connection.close_stream(self.stream_id, cancel=False)
                code, details, trailing = decode_status(frame.body)
                self.ended(CallError(RpcStatus(CODES.get(code, grpc.StatusCode.UNKNOWN), details, trailing)))
            elif kind == REFUSED:
                connection.close_stream(self.stream_id, cancel=False)
                self.ended(Unreached(f"the lane at {connection.address} refused the call: {decode_refused(frame.body)}"))
            else:
                return f"a lane server sent a frame of kind {kind} on a stream"
        except FrameError as exc:
            return str(exc)
        return None

    def ended(self, error: CallError | None, trailers: Metadata = ()) -> None:
        """The stream is over (END, STATUS, REFUSED, the connection lost, or given up on)."""
        self.inbound.queue.finish(error, trailers)
        self.credit.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pump = self._pump
        if pump is not None and not pump.done() and pump is not asyncio.current_task():
            pump.cancel()  # the server takes no more messages

    def give_up(self, error: CallError) -> None:
        """End the stream here with ``error`` and tell the server to stop."""
        connection = self._connection
        if connection is not None:
            connection.close_stream(self.stream_id, cancel=True)
        self.ended(error)

    def _expire(self) -> None:
        self._timer = None
        self.give_up(self._client._deadline_exceeded(self._method))

    async def aclose(self) -> None:
        if self.started and not self.inbound.queue.ended:
            self.give_up(failed(grpc.StatusCode.CANCELLED, f"{self._method}: the caller gave up the stream"))
        self.inbound.queue.close()
        pump = self._pump
        if pump is not None and not pump.done():
            pump.cancel()
            await asyncio.wait((pump,))
