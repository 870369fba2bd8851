"""Per-stream flow control, the same at both ends of a lane connection.

:class:`Credit` is what a sender may still send on one stream; it starts at
:data:`~runtime.lane._frames.STREAM_WINDOW` bytes, each message spends its length plus
:data:`~runtime.lane._frames.MESSAGE_COST`, and a sender at zero waits for the peer's WINDOW
frame. :class:`Inbound` is the receiving side: the messages that arrived and are not read yet,
and the credit to grant back once half a window has been read. A peer that sends past its
credit is misbehaving, and :meth:`Inbound.received` says so rather than buffering it.
"""

from __future__ import annotations

import asyncio

from runtime.lane._frames import MESSAGE_COST, STREAM_WINDOW
from runtime.transport import MessageQueue

__all__ = ["Credit", "Inbound"]


class Credit:
    """Bytes this side may still send on one stream."""

    __slots__ = ("_available", "_waiter", "closed")

    def __init__(self, window: int = STREAM_WINDOW) -> None:
        self._available = window
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        """The stream ended: nothing more may be sent, and a waiting sender is let go."""

    async def spend(self, size: int) -> bool:
        """Wait until there is credit, then spend it on a message of ``size`` bytes; False when
        the stream ended meanwhile (the message must not be sent)."""
        while self._available <= 0 and not self.closed:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        if self.closed:
            return False
        self._available -= size + MESSAGE_COST
        return True

    def grant(self, credit: int) -> None:
        self._available += credit
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Inbound:
    """The messages received on one stream and not read yet, and the credit owed for those read."""

    __slots__ = ("_half", "_limit", "_outstanding", "_read", "queue")

    def __init__(self, max_message_bytes: int, window: int = STREAM_WINDOW) -> None:
        self.queue = MessageQueue()
        self._outstanding = 0
        """Bytes the peer sent that have not been granted back yet."""
        self._read = 0
        """Bytes read since the last grant."""
        self._limit = window + max_message_bytes + MESSAGE_COST
        """The most a peer that keeps to its credit can have outstanding."""
        self._half = window // 2

    def received(self, payload: bytes) -> bool:
        """Queue a message that arrived; False when the peer sent past its credit (it is not
        queued: the connection should be closed)."""
        self._outstanding += len(payload) + MESSAGE_COST
        if self._outstanding > self._limit:
            return False
        self.queue.put_nowait(payload)
        return True

    def consumed(self, payload: bytes) -> int:
        """A message was read: the credit to grant now (0: not yet, less than half a window)."""
        self._read += len(payload) + MESSAGE_COST
        if self._read < self._half:
            return 0
        grant, self._read = self._read, 0
        self._outstanding -= grant
        return grant
