"""The lane: a lightweight framed transport for the gateway's calls to its own workers.

Why it exists: measured on this runtime, a grpc.aio client call costs about 190 µs of CPU in
Python and a grpc.aio server call about 150 µs, so a gateway hop over gRPC costs more than a
naive pass-through proxy. Between our own gateway and our own workers we need none of HTTP/2:
the lane is a multiplexed request/response protocol over one TCP connection per worker
address, built on :class:`asyncio.Protocol` callbacks (not streams, which cost a future per
read). Workers keep serving gRPC to everyone else; the lane is an extra port, whose address a
worker gives out through the raw-bytes gRPC method :data:`WHERE_METHOD`.

Both ends speak the call contract, :class:`~runtime.transport.Transport`: :class:`LaneServer`
serves one (a worker's endpoints) and :class:`LaneClient` is one, so the module client traces,
translates and retries lane calls exactly like gRPC calls.

Streams ride the same connection (see ``_frames.py``): OPEN starts one, MESSAGE frames carry its
messages each way within per-stream credit that WINDOW frames grant (so a slow reader slows the
handler, and nothing piles up), the client's HALF ends its side, END or STATUS the server's.

The format (see ``_frames.py``): every frame is a 9-byte header ``!IIB`` (body length, stream
id, kind) and a body of that length. The client sends REQUEST (method path, metadata pairs,
seconds left or none, payload) and CANCEL (it gave up on a stream id); the server answers each
stream once, with RESPONSE (response metadata and payload), STATUS (a non-OK code, details
and trailing metadata, ``-bin`` values kept as bytes) or REFUSED (the call was never started,
as when the worker is stopping, so the client sends it over gRPC instead). Every field inside a body is
length-prefixed; a frame past ``max_message_bytes`` plus a metadata allowance is skipped
unread and answered with RESOURCE_EXHAUSTED.

Flow control at both ends: a server runs at most ``max_concurrent_calls`` calls per connection
and stops reading when its answers are not read or too many requests wait; a client whose
requests are not read holds new calls (within their deadlines) until the connection drains.
Neither end buffers without bound. The module client retires a lane only for the lane's own
failures (never for a handler's UNAVAILABLE), and closing one gives its calls the pool's grace.

    server = LaneServer(service.transport, host="127.0.0.1")
    address = await server.start()
    client = LaneClient(address)
    body, trailers = await client.unary("/users.v1.UsersService/GetUser", payload, [], None)
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import grpc.aio

from runtime.lane._client import LaneClient, LaneStream
from runtime.lane._server import LaneLimits, LaneServer, lane_limits

__all__ = [
    "PROTOCOL",
    "WHERE_METHOD",
    "LaneClient",
    "LaneLimits",
    "LaneServer",
    "LaneStream",
    "lane_limits",
    "parse_where",
    "where_handler",
]

WHERE_METHOD = "/modrpc.lane.v1.Lane/Where"
"""The raw-bytes gRPC method a worker answers with its lane: ``modrpc-lane/2 host:port`` in UTF-8."""

PROTOCOL = "modrpc-lane/2"
"""The frame format this code speaks. A worker names its own in the :data:`WHERE_METHOD` answer,
so a gateway meeting a worker of another format (mid-upgrade) keeps to gRPC with it. Version 2
added streams (OPEN, MESSAGE, HALF, END, WINDOW), which a version-1 end cannot read."""


def parse_where(answer: bytes) -> str | None:
    """The lane address in a :data:`WHERE_METHOD` answer; None when it speaks another format.

        >>> parse_where(b"modrpc-lane/2 127.0.0.1:40123"), parse_where(b"modrpc-lane/1 127.0.0.1:1")
        ('127.0.0.1:40123', None)
    """
    protocol, _, address = answer.decode("utf-8", "replace").partition(" ")
    return address if protocol == PROTOCOL and address else None


class _WhereHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Answers :data:`WHERE_METHOD` only; every other path falls through to the next handler."""

    def __init__(self, address: Callable[[], str]) -> None:
        self._address = address
        self._method = grpc.unary_unary_rpc_method_handler(self._where)

    async def _where(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        return f"{PROTOCOL} {self._address()}".encode()

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        return self._method if handler_call_details.method == WHERE_METHOD else None


def where_handler(address: Callable[[], str]) -> grpc.GenericRpcHandler[bytes, bytes]:
    """A gRPC handler answering :data:`WHERE_METHOD` with ``address()`` (read at each call, so
    it can be registered before the lane server has its port).

        server.add_generic_rpc_handlers((where_handler(lambda: lane.address),))
    """
    return _WhereHandler(address)
