"""Counting ``users.created`` deliveries on the fabric, independently of the example modules.

The audit subscribes as a consumer group of its own, before any load starts, so the stream
keeps every message for it (interest retention) through outages, and counts each user id once
however often it is redelivered.
"""

from __future__ import annotations

import asyncio
import json
import time

from runtime.fabric import Message, Subscription, open_fabric

__all__ = ["EventAudit"]

TOPIC = "users.created"


class EventAudit:
    """Which users' ``users.created`` events reached a subscriber, and how often."""

    def __init__(self, url: str) -> None:
        self._fabric = open_fabric(url)
        self._subscription: Subscription | None = None
        self.delivered: dict[str, int] = {}
        self.without_msg_id = 0
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self._fabric.start()
        self._subscription = await self._fabric.subscribe(TOPIC, self._on_message, group="faults-audit")

    async def _on_message(self, message: Message) -> None:
        user_id = json.loads(message.data)["id"]
        if message.msg_id is None:
            self.without_msg_id += 1
        self.delivered[user_id] = self.delivered.get(user_id, 0) + 1
        self._changed.set()

    async def wait_for(self, user_ids: list[str], within: float) -> list[str]:
        """Wait until every one of ``user_ids`` was delivered, or ``within`` passes; the missing."""
        give_up = time.monotonic() + within
        while True:
            missing = [u for u in user_ids if u not in self.delivered]
            left = give_up - time.monotonic()
            if not missing or left <= 0:
                return missing
            self._changed.clear()
            try:
                async with asyncio.timeout(min(left, 0.5)):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def close(self) -> None:
        await self._fabric.close()
