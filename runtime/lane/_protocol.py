"""What both ends of a lane connection share: the transport, and frames written in batches."""

from __future__ import annotations

import asyncio

__all__ = ["FramedProtocol"]


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
