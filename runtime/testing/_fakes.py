"""What a test puts around a module instead of the rest of the system.

Each fake stands where a real backend would, behind the same narrow interface, so the module's
code runs unchanged: other modules are plain async functions (:class:`StubModules`), the queue
fabric keeps what is published (:class:`RecordingFabric`), secrets come from a dict
(:class:`DictSecrets`), and the wall clock stands still until moved (:class:`ManualClock`).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, TypeAdapter

from runtime.context import MethodTarget
from runtime.errors import Unimplemented
from runtime.fabric import Message, Subscription
from runtime.manifest import topic_covers
from runtime.wire import snake

__all__ = [
    "DictSecrets",
    "ManualClock",
    "ModuleCall",
    "Published",
    "RecordingFabric",
    "Stub",
    "StubModules",
]

Stub = Callable[[Any], Any]
"""Stands in for one method of another module: takes the request model, returns the response
(its model, a dict of it, or an awaitable of either). Raising a runtime error
(``NotFound(...)``) fails the call as the real module would."""


class ManualClock:
    """A wall clock that moves only when told: ``gctx.clock`` in tests.

        >>> clock = ManualClock(datetime(2025, 6, 1, tzinfo=UTC))
        >>> clock.advance(90)
        >>> clock.now().isoformat()
        '2025-06-01T00:01:30+00:00'
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2025, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start, e.g. tzinfo=UTC")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def time(self) -> float:
        return self._now.timestamp()

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or back, for a negative number)."""
        self._now += timedelta(seconds=seconds)

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("ManualClock.set needs a timezone-aware datetime")
        self._now = when.astimezone(UTC)


class DictSecrets:
    """A secrets provider over a dict, for the real secrets manager (redaction included)."""

    name = "test"

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    async def get(self, name: str) -> str | None:
        return self._values.get(name)

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class ModuleCall:
    """One call the module under test made to another module."""

    module: str
    method: str
    """The method's name in snake_case, as the module called it (``gctx.modules.x.get_user``)."""
    request: Any


class StubModules:
    """``gctx.modules`` for a test: each call goes to the stub registered for it, and is kept.

    A call with no stub fails with UNIMPLEMENTED naming the stub to register, so a test never
    reaches a real module by accident.
    """

    def __init__(self) -> None:
        self.stubs: dict[tuple[str, str], Stub] = {}
        self.calls: list[ModuleCall] = []
        self._adapters: dict[Any, TypeAdapter[Any]] = {}

    def add(self, module: str, method: str, stub: Stub) -> None:
        self.stubs[(module, snake(method))] = stub

    async def __call__(self, target: MethodTarget, request: Any) -> Any:
        method = snake(target.method)
        self.calls.append(ModuleCall(target.module, method, request))
        stub = self.stubs.get((target.module, method))
        if stub is None:
            raise Unimplemented(
                f"{target.module}.{method} is not stubbed in this test: "
                f"harness.stub({target.module!r}, {method!r}, fn)"
            )
        result = stub(request)
        if inspect.isawaitable(result):
            result = await result
        return self._as(target.response_type, result)

    async def stream(self, target: MethodTarget, requests: AsyncIterable[Any]) -> AsyncIterator[Any]:
        """A streaming method's stub: it is given the request (the stream of requests, for a
        client-streaming method) and returns one response, or an iterable or async iterable of
        them for a server-streaming method."""
        method = snake(target.method)
        stub = self.stubs.get((target.module, method))
        if stub is None:
            raise Unimplemented(
                f"{target.module}.{method} is not stubbed in this test: "
                f"harness.stub({target.module!r}, {method!r}, fn)"
            )
        argument: Any = requests
        if not target.client_streaming:
            argument = await anext(aiter(requests))
        self.calls.append(ModuleCall(target.module, method, argument))
        result = stub(argument)
        if inspect.isawaitable(result):
            result = await result
        if hasattr(result, "__aiter__"):
            async for item in result:
                yield self._as(target.response_type, item)
        elif target.server_streaming and isinstance(result, Iterable) and not isinstance(result, Mapping | BaseModel):
            for item in result:
                yield self._as(target.response_type, item)
        else:
            yield self._as(target.response_type, result)

    def _as(self, response_type: Any, value: Any) -> Any:
        if response_type is Any or response_type is dict:
            return value
        if isinstance(response_type, type) and isinstance(value, response_type):
            return value
        if isinstance(value, BaseModel):  # another module's model of the same shape
            value = value.model_dump()
        adapter = self._adapters.get(response_type)
        if adapter is None:
            adapter = self._adapters[response_type] = TypeAdapter(response_type)
        return adapter.validate_python(value)


@dataclass(frozen=True)
class Published:
    """One message the module published."""

    topic: str
    data: bytes
    headers: Mapping[str, str]
    msg_id: str | None

    def json(self) -> Any:
        """The payload decoded: models and mappings are published as JSON."""
        return json.loads(self.data)


@dataclass
class _Subscription:
    topic: str
    handler: Callable[[Message], Awaitable[None]]
    group: str | None
    fabric: RecordingFabric = field(repr=False)

    @property
    def closed(self) -> bool:
        return self not in self.fabric.subscriptions

    async def close(self) -> None:
        if self in self.fabric.subscriptions:
            self.fabric.subscriptions.remove(self)

    async def __aenter__(self) -> _Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class RecordingFabric:
    """A queue fabric that keeps every published message and delivers only when asked.

    Publishing appends to :attr:`published`; nothing is delivered behind the test's back.
    :meth:`deliver` hands a message to the subscribers whose topic covers it, in the test's
    own task, so their effects are visible as soon as it returns.
    """

    def __init__(self) -> None:
        self.published: list[Published] = []
        self.subscriptions: list[_Subscription] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self.subscriptions.clear()

    async def __aenter__(self) -> RecordingFabric:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        msg_id: str | None = None,
        ttl: float | None = None,
        priority: int = 0,
        timeout: float | None = None,
    ) -> None:
        self.published.append(Published(topic, data, dict(headers or {}), msg_id))

    async def subscribe(
        self,
        topic: str,
        handler: Callable[[Message], Awaitable[None]],
        *,
        group: str | None = None,
        max_attempts: int = 5,
        ack_wait: float = 30.0,
    ) -> Subscription:
        subscription = _Subscription(topic, handler, group, self)
        self.subscriptions.append(subscription)
        return subscription

    async def deliver(self, topic: str, data: bytes, headers: Mapping[str, str] | None = None) -> int:
        """Hand one message to every subscriber of ``topic``; how many received it.

        A subscriber that raises fails the delivery: the error reaches the test (a real fabric
        would redeliver it).
        """
        targets = [s for s in self.subscriptions if topic_covers(s.topic, topic)]
        for subscription in targets:
            await subscription.handler(Message(topic=topic, data=data, headers=dict(headers or {})))
        return len(targets)
