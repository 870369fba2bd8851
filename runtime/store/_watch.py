"""A watch on the store: an async iterator of :class:`StoreEvent` that is also a context manager.

Entering the watch subscribes before anything else happens, so the usual pattern loses nothing
between reading the store and hearing about changes to it::

    async with store.watch() as events:
        state = await load_everything(store)   # changes from here on are delivered
        async for event in events:
            state = await reload(store, event)

Iterating without ``async with`` subscribes on the first ``__anext__``. Either way the watch
owns a database connection (PostgreSQL) or a polling handle (SQLite) until it is closed: by
leaving the ``async with``, by ``aclose()``, by cancelling a pending ``__anext__`` (which is how a
task consuming the watch is stopped), or by closing the store, which ends every watch on it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol

from runtime.store._records import StoreEvent

__all__ = ["Subscription", "Watch"]


class Subscription(Protocol):
    """What a backend provides behind a :class:`Watch`."""

    async def next_events(self) -> list[StoreEvent] | None:
        """Wait for the next events; ``None`` once the subscription or its store is closed."""
        ...

    async def close(self) -> None:
        """Release the subscription's connection; safe to call twice."""
        ...


class Watch:
    """Events from the store, oldest first, for changes committed after the watch subscribed."""

    def __init__(self, subscribe: Callable[[], Awaitable[Subscription]]) -> None:
        self._subscribe = subscribe
        self._subscription: Subscription | None = None
        self._buffer: deque[StoreEvent] = deque()
        self._closed = False

    async def __aenter__(self) -> Watch:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> StoreEvent:
        if self._closed:
            raise StopAsyncIteration
        try:
            subscription = await self._open()
            while subscription is not None and not self._buffer:
                batch = await subscription.next_events()
                if batch is None:
                    await self.aclose()
                    raise StopAsyncIteration
                self._buffer.extend(batch)
        except asyncio.CancelledError:
            await self.aclose()
            raise
        if not self._buffer:
            raise StopAsyncIteration
        return self._buffer.popleft()

    async def aclose(self) -> None:
        """Stop watching and release the connection; safe to call twice."""
        self._closed = True
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.close()

    async def _open(self) -> Subscription | None:
        """The subscription, made on first use; ``None`` once the watch is closed."""
        if self._subscription is None and not self._closed:
            subscription = await self._subscribe()
            if self._closed:  # aclose() ran while we were subscribing
                await subscription.close()
                return None
            self._subscription = subscription
        return self._subscription
