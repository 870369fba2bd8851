"""What the two backends' subscriptions share: one task that runs the handler, and how it stops.

Closing drains: a handler that is running gets ``drain_timeout`` seconds to finish, then it is
cancelled. Whatever it was holding is not acknowledged, so the backend redelivers it; nothing
is lost by closing, only delayed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from runtime.fabric._types import Lifecycle

__all__ = ["Worker"]

log = logging.getLogger("modrpc.fabric")


class Worker(Lifecycle):
    """A subscription whose deliveries run, one at a time, in a task of its own."""

    def __init__(self, topic: str, group: str | None, drain_timeout: float) -> None:
        self._topic_name = topic
        self._group_name = group
        self._drain_timeout = drain_timeout
        self._task: asyncio.Task[None] | None = None
        self._current: Any = None
        """The delivery the handler is working on, or ``None`` when it is idle."""
        self._stopping = False
        self._closed = False

    @property
    def topic(self) -> str:
        return self._topic_name

    @property
    def group(self) -> str | None:
        return self._group_name

    @property
    def closed(self) -> bool:
        return self._closed

    def begin(self) -> None:
        """Start the task; called by the fabric once the subscription is registered."""
        self._task = asyncio.create_task(self._run(), name=f"fabric:{self._topic_name}")
        self._task.add_done_callback(_log_crash)

    async def _run(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Subscriptions start when they are made; this exists for ``async with``."""

    async def close(self) -> None:
        task = self._task
        if self._closed or task is None:
            return
        self._stopping = True
        if task is asyncio.current_task():
            return  # closed from its own handler: the loop stops once the handler returns
        if self._current is None:
            task.cancel()
        else:
            done, _ = await asyncio.wait({task}, timeout=self._drain_timeout)
            if not done:
                log.info("cancelling a handler on %s that outlived drain_timeout", self.topic)
                task.cancel()
        # asyncio.wait never raises the task's outcome; our own cancellation still propagates.
        await asyncio.wait({task})


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("fabric subscription task failed", exc_info=task.exception())
