"""The call contract: what every hop between runtime processes looks like, whatever carries it.

A :class:`Transport` takes one unary call (method path, request bytes, metadata, deadline) and
gives back the response bytes with the response metadata, or raises :class:`CallError` carrying
the status the call ended with. Cancelling the awaiting task cancels the call. That is all the
gateway and the module client ever see, so gRPC, the lane and in-process calls are
interchangeable; a server endpoint is the same shape, which is why an in-process call is just
the worker's endpoint called directly.

    CallError                 the call ended with this non-OK status (the peer's own: relayable)
    └── TransportError        the transport failed, not the peer (its text is for the log)
        ├── Unreached         nothing was sent: the call may go elsewhere, idempotent or not
        └── Disconnected      the connection went away mid-call: the peer may have run it
"""

from __future__ import annotations

from collections.abc import Sequence
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
    "Transport",
    "TransportError",
    "Unreached",
]

Metadata = tuple[tuple[str, str | bytes], ...]
"""Metadata pairs in order; ``-bin`` values are bytes, every other value is text."""

MetadataIn = Sequence[tuple[str, str | bytes]]

Reply = tuple[bytes, Metadata]
"""The response bytes and the response metadata (the trailers, with ``x-request-id``)."""


class Transport(Protocol):
    """One unary call, by whatever means: a gRPC channel, a lane connection, or in process."""

    async def unary(
        self, method: str, payload: bytes, metadata: MetadataIn, deadline: Deadline | None
    ) -> Reply:
        """Send ``payload`` to ``method`` and return the reply; raise :class:`CallError` for a
        non-OK status. ``deadline`` None means no deadline."""
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
