"""What both ends of a lane connection share: the transport, and frames written in batches."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

__all__ = ["FramedProtocol", "keep_alive", "shut"]


def keep_alive(transport: asyncio.BaseTransport, *, idle: float, interval: float, probes: int) -> None:
    """TCP keepalive on ``transport``'s socket: probe after ``idle`` seconds without traffic,
    every ``interval`` seconds, and drop the connection after ``probes`` unanswered probes, so a
    peer that vanished (host down, cable cut) is found in bounded time on either end. Linux
    option names; other systems keep their default timing."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", probes)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, max(1, round(value)))


class FramedProtocol(asyncio.Protocol):
    """An ``asyncio.Protocol`` that sends whole frames: the first of a loop turn at once, the rest
    of that turn together.

    Under load many calls are sent (or answered) in one turn of the event loop; one write(2) for
    all of them instead of one each saves a system call per call, and the first frame of a turn
    still leaves at once, so a lone call waits for nothing.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._batching = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Settled when the connection is gone (``connection_lost``)."""

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        """Close once what is queued has been written (the peer must read it for that)."""
        if self._transport is not None:
            self.flush()
            self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is not written yet."""
        if self._transport is not None:
            self._transport.abort()

    def write_frame(self, frame: bytes) -> None:
        """Send ``frame`` (dropped when the connection is closing: no answer can arrive then)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._batching:
            self._out.append(frame)
            return
        transport.write(frame)
        self._batching = True
        asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write the frames held back in this turn of the loop, if the connection is still open."""
        self._batching = False
        out, self._out = self._out, []
        transport = self._transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))


async def shut(connections: Sequence[FramedProtocol], flush_seconds: float) -> None:
    """Close ``connections``, letting each flush for up to ``flush_seconds``; a peer that reads
    nothing any more is then cut off rather than waited for."""
    if not connections:
        return
    for connection in connections:
        connection.close()
    _, stuck = await asyncio.wait([c.closed for c in connections], timeout=flush_seconds)
    if stuck:
        for connection in connections:
            if not connection.closed.done():
                connection.abort()
        await asyncio.wait(stuck)
