"""The call contract: what every hop between runtime processes looks like, whatever carries it.

A :class:`Transport` takes one unary call (method path, request bytes, metadata, deadline) and
gives back the response bytes with the response metadata, or raises :class:`CallError` carrying
the status the call ended with. Cancelling the awaiting task cancels the call. That is all the
gateway and the module client ever see, so gRPC, the lane and in-process calls are
interchangeable; a server endpoint is the same shape, which is why an in-process call is just
the worker's endpoint called directly.

A streaming call (client, server or bidirectional: the transport does not care which) is the
peer of a unary one: :meth:`Transport.stream` takes the request messages as an async iterator
and gives back a :class:`StreamCall`, whose response messages are read with ``async for``; the
call's end is either the iterator's end (then :attr:`StreamCall.trailers` holds the trailing
metadata) or :class:`CallError`. ``aclose()`` gives up on the call. Each transport reads the
request iterator only as fast as the peer takes messages and delivers response messages only as
fast as the reader asks for them, so a slow reader slows the handler and nothing piles up.

    CallError                 the call ended with this non-OK status (the peer's own: relayable)
    └── TransportError        the transport failed, not the peer (its text is for the log)
        ├── Unreached         nothing was sent: the call may go elsewhere, idempotent or not
        └── Disconnected      the connection went away mid-call: the peer may have run it
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from typing import Protocol

import grpc

from runtime.deadline import Deadline
from runtime.status import RpcStatus

__all__ = [
    "CallError",
    "Disconnected",
    "Metadata",
    "MetadataIn",
    "Reply",
    "StreamCall",
    "Transport",
    "TransportError",
    "Unreached",
]

Metadata = tuple[tuple[str, str | bytes], ...]
"""Metadata pairs in order; ``-bin`` values are bytes, every other value is text."""

MetadataIn = Sequence[tuple[str, str | bytes]]

Reply = tuple[bytes, Metadata]
"""The response bytes and the response metadata (the trailers, with ``x-request-id``)."""


class StreamCall(Protocol):
    """One streaming call under way, as its caller sees it.

        call = transport.stream(method, requests, metadata, deadline)
        try:
            async for message in call:      # CallError when the call ends with a non-OK status
                ...
            trailers = call.trailers         # the call ended OK
        finally:
            await call.aclose()              # gives up on the call if it is still running

    The call starts at once; the request messages are read from their iterator as the peer takes
    them, and the end of that iterator half-closes the call. An exception from the request
    iterator cancels the call, and the reader gets CANCELLED with that exception as the cause.
    """

    def __aiter__(self) -> StreamCall: ...

    async def __anext__(self) -> bytes:
        """The next response message; ``StopAsyncIteration`` at an OK end, :class:`CallError`
        otherwise. Cancelling the reading task cancels the call."""
        ...

    @property
    def trailers(self) -> Metadata:
        """The trailing metadata, once the messages ended OK (empty before)."""
        ...

    async def aclose(self) -> None:
        """Cancel the call unless it has ended; returns once the transport let go of it. Safe twice."""
        ...


class Transport(Protocol):
    """One call, by whatever means: a gRPC channel, a lane connection, or in process."""

    async def unary(
        self, method: str, payload: bytes, metadata: MetadataIn, deadline: Deadline | None
    ) -> Reply:
        """Send ``payload`` to ``method`` and return the reply; raise :class:`CallError` for a
        non-OK status. ``deadline`` None means no deadline."""
        ...

    def stream(
        self, method: str, requests: AsyncIterable[bytes], metadata: MetadataIn, deadline: Deadline | None
    ) -> StreamCall:
        """Start a streaming call to ``method`` sending ``requests``; see :class:`StreamCall`.
        Must be called with the event loop running."""
        ...


class CallError(Exception):
    """A call ended with a non-OK status. Expected: the status is the peer's answer.

    ``status`` keeps the code, the details and the trailing metadata, ``google.rpc`` details
    (``grpc-status-details-bin``) included, so a gateway can relay it unchanged.
    """

    def __init__(self, status: grpc.Status) -> None:
        super().__init__(f"{status.code.name}: {status.details}")
        self.status = status

    @property
    def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = self.status.code
        return code

    @property
    def details(self) -> str:
        details: str = self.status.details or ""
        return details

    @property
    def trailing_metadata(self) -> Metadata:
        return tuple(self.status.trailing_metadata or ())


class TransportError(CallError):
    """The transport failed the call, not the peer: its details may name internal addresses,
    so they go to the log and callers get a message naming the module instead."""


class Unreached(TransportError):
    """UNAVAILABLE before anything was sent (a refused connection, a closed client, a server
    that refused to start the call). The call may safely go elsewhere, idempotent or not."""

    def __init__(self, details: str) -> None:
        super().__init__(RpcStatus(grpc.StatusCode.UNAVAILABLE, details))


class Disconnected(TransportError):
    """UNAVAILABLE because the connection was lost or closed while the call was out: the peer
    may or may not have run it, so only an idempotent call may be tried again."""

    def __init__(self, details: str) -> None:
        super().__init__(RpcStatus(grpc.StatusCode.UNAVAILABLE, details))
