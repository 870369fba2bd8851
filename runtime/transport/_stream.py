"""The pieces every transport's streams are built from: a message queue and a produced stream.

:class:`MessageQueue` hands messages from one producer to one reader in order, then one end (OK
with trailers, or an error). It holds at most ``capacity`` messages: a producer that gets ahead
waits in :meth:`MessageQueue.put`, which is how a slow reader slows whatever produces. A queue
whose producer is bounded some other way (the lane's per-stream credit) puts without waiting.

:class:`ProducedStream` is a :class:`~runtime.transport.StreamCall` whose messages a task of its
own produces: an in-process call, where the producer is the worker's lifecycle running the
handler. Closing it cancels that task and waits until it has finished its cleanup.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

import grpc

from runtime.status import RpcStatus
from runtime.transport._contract import CallError, Metadata

__all__ = ["FailedStream", "MessageQueue", "ProducedStream", "request_failed"]

log = logging.getLogger("modrpc.transport")

DEFAULT_CAPACITY = 8
"""Messages a produced stream holds before its producer waits for the reader."""


class _Open:
    """The end of a queue that has not ended yet."""


_OPEN = _Open()


class MessageQueue:
    """Messages from one producer to one reader, in order, then one end.

    ``capacity`` 0 means the queue itself never makes the producer wait (something else bounds
    it, such as the lane's credit).
    """

    __slots__ = ("_capacity", "_end", "_items", "_reader", "_trailers", "_writer", "closed")

    def __init__(self, capacity: int = 0) -> None:
        self._capacity = capacity
        self._items: collections.deque[bytes] = collections.deque()
        self._end: BaseException | _Open | None = _OPEN
        self._trailers: Metadata = ()
        self._reader: asyncio.Future[None] | None = None
        self._writer: asyncio.Future[None] | None = None
        self.closed = False
        """The reader let go: what is put from now on is dropped."""

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ended(self) -> bool:
        return self._end is not _OPEN

    @property
    def trailers(self) -> Metadata:
        return self._trailers

    def put_nowait(self, message: bytes) -> None:
        if self.closed or self._end is not _OPEN:
            return
        self._items.append(message)
        _wake(self._reader)

    async def put(self, message: bytes) -> None:
        """Add ``message``, first waiting while the queue is full."""
        while self._capacity and len(self._items) >= self._capacity and not self.closed:
            waiter = self._writer = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._writer = None
        self.put_nowait(message)

    def finish(self, error: BaseException | None = None, trailers: Metadata = ()) -> None:
        """End the messages: OK with ``trailers`` (``error`` None), or with ``error``. Once only."""
        if self._end is not _OPEN:
            return
        self._end = error
        self._trailers = trailers
        _wake(self._reader)

    def close(self) -> None:
        """The reader let go: drop what is queued, and let a waiting producer go on (and drop)."""
        self.closed = True
        self._items.clear()
        _wake(self._writer)

    async def get(self) -> bytes:
        """The next message; ``StopAsyncIteration`` at an OK end, the error at any other."""
        items = self._items
        while not items:
            end = self._end
            if end is not _OPEN:
                if end is None:
                    raise StopAsyncIteration
                assert isinstance(end, BaseException)
                raise end
            waiter = self._reader = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._reader = None
        message = items.popleft()
        if self._writer is not None:
            _wake(self._writer)
        return message

    def get_nowait(self) -> bytes | None:
        """The next message if one is queued, else None (the end is left for :meth:`get`)."""
        if not self._items:
            return None
        message = self._items.popleft()
        if self._writer is not None:
            _wake(self._writer)
        return message


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def request_failed(exc: BaseException) -> CallError:
    """The error a stream's reader gets when the request iterator raised ``exc``: the call was
    cancelled because of it."""
    error = CallError(RpcStatus(grpc.StatusCode.CANCELLED, f"the request stream failed: {exc!r}"))
    error.__cause__ = exc
    return error


class FailedStream:
    """A stream that ended before it began, with ``error`` (an unknown method, say)."""

    __slots__ = ("_error",)

    def __init__(self, error: CallError) -> None:
        self._error: CallError | None = error

    def __aiter__(self) -> FailedStream:
        return self

    async def __anext__(self) -> bytes:
        error, self._error = self._error, None
        if error is None:
            raise StopAsyncIteration
        raise error

    @property
    def trailers(self) -> Metadata:
        return ()

    async def aclose(self) -> None:
        self._error = None


Produce = Callable[[MessageQueue], Awaitable[Metadata]]
"""Puts the response messages into the queue and returns the trailers; raises :class:`CallError`
for a non-OK end."""


class ProducedStream:
    """A :class:`~runtime.transport.StreamCall` whose messages are produced by a task of its own.

    The task starts at once. ``cancel_ok`` says whether closing may cancel the producer now:
    the worker's lifecycle enforces the deadline itself, and a cancellation landing on top of its
    own (as a caller's deadline passes) would cut its undo steps short, so near the deadline
    closing only waits for it.
    """

    __slots__ = ("_cancel_ok", "_queue", "_task")

    def __init__(self, produce: Produce, *, capacity: int = DEFAULT_CAPACITY, cancel_ok: Callable[[], bool] | None = None) -> None:
        self._queue = MessageQueue(capacity)
        self._cancel_ok = cancel_ok
        self._task = asyncio.get_running_loop().create_task(self._run(produce))

    async def _run(self, produce: Produce) -> None:
        queue = self._queue
        try:
            trailers = await produce(queue)
        except CallError as exc:
            queue.finish(exc)
        except asyncio.CancelledError:
            queue.finish(CallError(RpcStatus(grpc.StatusCode.CANCELLED, "the call was cancelled")))
            raise
        except Exception:
            log.exception("a stream's producer failed")
            queue.finish(CallError(RpcStatus(grpc.StatusCode.INTERNAL, "internal error")))
        else:
            queue.finish(None, trailers)

    def __aiter__(self) -> ProducedStream:
        return self

    async def __anext__(self) -> bytes:
        message = self._queue.get_nowait()
        if message is not None:
            return message
        try:
            return await self._queue.get()
        except asyncio.CancelledError:
            await self.aclose()
            raise

    @property
    def trailers(self) -> Metadata:
        return self._queue.trailers

    @property
    def task(self) -> asyncio.Task[None]:
        return self._task

    async def aclose(self) -> None:
        self._queue.close()
        task = self._task
        if task.done():
            return
        if self._cancel_ok is None or self._cancel_ok():
            task.cancel()
        cancelled: asyncio.CancelledError | None = None
        while not task.done():
            try:
                await asyncio.wait((task,))
            except asyncio.CancelledError as exc:  # held until the producer's cleanup is over
                cancelled = cancelled or exc
        if cancelled is not None:
            raise cancelled
