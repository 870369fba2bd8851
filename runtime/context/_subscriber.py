"""``@subscriber``: a module function fed by a global topic of the queue fabric.

    @subscriber("users.created", group="notifications")
    async def welcome(event: UserCreated, gctx: GlobalContext) -> None: ...

The worker subscribes every marked function of a module's handlers file when it starts, through
``gctx.subscribe`` (so the topic must be declared under ``capabilities.subscribe``), decoding each
message's JSON into the annotated event model. A function that raises is redelivered up to
``max_attempts`` times, then the message goes to the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["SubscriberMark", "subscriber", "subscriber_mark"]

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "__modrpc_subscriber__"


@dataclass(frozen=True, slots=True)
class SubscriberMark:
    topic: str
    group: str | None
    max_attempts: int


def subscriber(topic: str, *, group: str | None = None, max_attempts: int = 5) -> Callable[[F], F]:
    """Mark ``fn(event, gctx)`` as the consumer of ``topic`` (a competing group when given)."""

    def mark(fn: F) -> F:
        setattr(fn, _ATTR, SubscriberMark(topic, group, max_attempts))
        return fn

    return mark


def subscriber_mark(obj: object) -> SubscriberMark | None:
    mark = getattr(obj, _ATTR, None)
    return mark if isinstance(mark, SubscriberMark) else None
