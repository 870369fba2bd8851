"""The module client's streaming call: one stream to a module, retried only before it began.

A stream is sent to an instance the pool picks, through whatever transport carries it, exactly
like a unary call. What differs is when it may be tried again: only while no response message
has come back, since a caller that has read messages cannot be handed a second beginning. The
request messages taken so far are kept (a few, within :data:`REPLAY_MESSAGES` and
:data:`REPLAY_BYTES`) so that a retry sends them again; past that bound, or once a message has
come back, a failure is final. Which failures are retried, the backoff, the deadline and the
budget are those of unary calls (:mod:`runtime.client._retry`).

    stream = client.stream("feed", "/feed.v1.FeedService/Count", requests, deadline=deadline)
    try:
        async for message in stream:
            ...
    finally:
        await stream.aclose()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING

import grpc
from opentelemetry import trace

from runtime.client._retry import RetryPolicy, is_retryable
from runtime.deadline import Deadline
from runtime.errors import DeadlineExceeded
from runtime.transport import CallError, Metadata, StreamCall

if TYPE_CHECKING:
    from runtime.client._client import ModuleClient

__all__ = ["REPLAY_BYTES", "REPLAY_MESSAGES", "ModuleStream"]

REPLAY_MESSAGES = 16
"""Request messages kept for a retry while no response has come back."""
REPLAY_BYTES = 1024 * 1024
"""Bytes of request messages kept for a retry; a stream that sent more is not retried."""


class _Replay:
    """The request messages of one streaming call, handed to each attempt in turn.

    Messages taken from the caller's iterator are kept while :attr:`keeping` (until a response
    arrives, or past the bounds), and each new attempt starts with them. An attempt given up on
    while it waited for the caller's next message leaves that iterator in an unknown state (its
    wait was cancelled), so no attempt may follow.
    """

    __slots__ = ("_bytes", "_kept", "_source", "broken", "exhausted", "keeping", "reading")

    def __init__(self, source: AsyncIterable[bytes]) -> None:
        self._source = aiter(source)
        self._kept: list[bytes] = []
        self._bytes = 0
        self.keeping = True
        self.exhausted = False
        self.reading = False
        self.broken = False

    @property
    def replayable(self) -> bool:
        return self.keeping and not self.reading and not self.broken

    def stop_keeping(self) -> None:
        self.keeping = False
        self._kept = []

    async def messages(self) -> AsyncIterator[bytes]:
        """One attempt's request messages: those kept, then the rest of the caller's."""
        for message in list(self._kept):
            yield message
        while not self.exhausted:
            self.reading = True
            try:
                message = await anext(self._source)
            except StopAsyncIteration:
                self.exhausted = True
                return
            except BaseException:
                self.broken = True
                raise
            finally:
                self.reading = False
            if self.keeping:
                self._bytes += len(message)
                if len(self._kept) >= REPLAY_MESSAGES or self._bytes > REPLAY_BYTES:
                    self.stop_keeping()
                else:
                    self._kept.append(message)
            yield message


class _Final(Exception):
    """A failed attempt that must not be retried (messages were sent that cannot be replayed)."""

    def __init__(self, error: CallError) -> None:
        super().__init__(str(error))
        self.error = error


class ModuleStream:
    """One streaming call to a module, as :meth:`ModuleClient.stream` returns it.

    Iterate it for the response messages; it ends, or raises the runtime error of the status
    the call ended with (as :meth:`ModuleClient.call` does). :attr:`trailers` holds the trailing
    metadata after an OK end. ``aclose()`` cancels the call if it is still running.
    """

    __slots__ = (
        "_address", "_call", "_client", "_deadline", "_done", "_idempotent", "_key", "_metadata", "_method",
        "_policy", "_replay", "_span", "_trailers",
    )  # fmt: skip

    def __init__(
        self,
        client: ModuleClient,
        key: str,
        method: str,
        requests: AsyncIterable[bytes],
        *,
        metadata: Metadata,
        deadline: Deadline | None,
        idempotent: bool,
        policy: RetryPolicy,
    ) -> None:
        self._client = client
        self._key = key
        self._method = method
        self._metadata = metadata
        self._deadline = deadline
        self._idempotent = idempotent
        self._policy = policy
        self._replay = _Replay(requests)
        self._call: StreamCall | None = None
        self._address = ""
        self._span: trace.Span | None = None
        self._done = False
        self._trailers: Metadata = ()

    def __aiter__(self) -> ModuleStream:
        return self

    @property
    def trailers(self) -> Metadata:
        return self._trailers

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        call = self._call
        if call is None:
            return await self._open()
        try:
            return await anext(call)
        except StopAsyncIteration:
            self._ended(call, None)
            raise
        except CallError as exc:
            self._ended(call, exc)
            raise self._client._error(exc, self._key, self._method) from exc
        except BaseException as exc:
            self._failed(exc)
            raise

    async def _open(self) -> bytes:
        """Start the call (retrying while that is allowed) and return its first message."""
        client = self._client
        budget = client.budget(self._key)
        budget.deposit()
        retrying = self._policy.retrying(
            deadline=self._deadline, budget=budget, idempotent=self._idempotent, sleep=client._sleep
        )
        try:
            first: bytes | None = await retrying(self._attempt)
        except _Final as final:
            raise client._error(final.error, self._key, self._method) from final.error
        except CallError as exc:
            raise client._error(exc, self._key, self._method) from exc
        if first is None:
            raise StopAsyncIteration
        return first

    async def _attempt(self) -> bytes | None:
        """One attempt: open the stream and read its first message (None: it ended with none)."""
        deadline = self._deadline
        if deadline is not None and deadline.expired():
            raise DeadlineExceeded(
                f"the deadline passed before {self._method} could be sent to {self._key.replace('@', ' ')}"
            )
        pool = self._client.pool
        self._address, transport = pool.pick_healthy(self._key) or await pool.acquire(self._key, deadline)
        metadata = self._metadata
        tracing = self._client._tracing
        if tracing is not None:
            self._span, metadata = tracing.start(self._method, metadata)
        call = transport.stream(self._method, self._replay.messages(), metadata, deadline)
        self._call = call
        try:
            first = await anext(call)
        except StopAsyncIteration:
            self._ended(call, None)
            return None
        except CallError as exc:
            replayable = self._replay.replayable
            self._call = None
            await call.aclose()
            self._ended(call, exc)
            if replayable and is_retryable(exc, idempotent=self._idempotent):
                raise
            raise _Final(exc) from exc
        except BaseException as exc:
            self._failed(exc)
            raise
        self._replay.stop_keeping()
        return first

    def _ended(self, call: StreamCall, error: CallError | None) -> None:
        """The call ended: tell outlier detection and the span how."""
        outliers = self._client.pool.outliers
        if error is None:
            self._done = True
            self._trailers = call.trailers
            outliers.succeeded(self._address)
        else:
            outliers.observe(self._address, error)
        span, self._span = self._span, None
        tracing = self._client._tracing
        if span is not None and tracing is not None:
            if error is None:
                tracing.finish(span, grpc.StatusCode.OK, None)
            else:
                tracing.finish(span, error.code, error.details)

    def _failed(self, exc: BaseException) -> None:
        """The reader gave up (cancelled) or the transport raised something unexpected."""
        span, self._span = self._span, None
        tracing = self._client._tracing
        if span is not None and tracing is not None:
            tracing.fail(span, exc)

    async def aclose(self) -> None:
        self._done = True
        call, self._call = self._call, None
        if call is not None:
            await call.aclose()
        if self._span is not None:
            self._failed(asyncio.CancelledError())
