"""The in-memory fabric: the embedded default, a real broker inside one process.

It keeps the same contract as the NATS backend, with the same model underneath:

* A topic delivers to **groups**. A named group is a shared queue its members compete for,
  and it is durable: while it has no members its messages wait for the next one. An ungrouped
  subscriber is a private group that disappears with it. Every group gets every message.
* A message is kept until every group has acknowledged it (interest retention); publishing
  to a topic that no group has ever subscribed to is a no-op. ``capacity`` bounds how many such
  messages a topic holds, which is what backpressure acts on.
* A handler that raises, or whose task dies, or that runs past ``ack_wait`` without finishing,
  has its message put back at the front of the group's queue with ``attempt + 1``; after
  ``max_attempts`` failures it goes to ``dlq.<topic>``.
* ``dlq.*`` topics instead keep their last ``capacity`` messages whether or not anyone
  listens, and a group that subscribes later receives them, so a dead letter is never lost
  for want of a subscriber.
* Higher ``priority`` is delivered first; equal priorities are FIFO.

Everything runs on the event loop of the caller; nothing is created before ``start``.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
from collections import deque
from collections.abc import Mapping
from types import MappingProxyType

from opentelemetry import context as otel_context

from runtime.errors import DeadlineExceeded, FailedPrecondition, ResourceExhausted
from runtime.fabric._types import (
    EMPTY_HEADERS,
    Handler,
    Lifecycle,
    MemoryOptions,
    Message,
    check_group,
    check_msg_id,
    check_publish,
    check_subscribe,
    check_topic,
    dead_letter_headers,
    dead_letter_topic,
    describe_error,
    is_dead_letter_topic,
    outgoing_headers,
)
from runtime.fabric._worker import Worker

__all__ = ["MemoryFabric", "MemorySubscription"]

log = logging.getLogger("modrpc.fabric")

_DEDUP_MAX = 100_000
"""Most remembered message ids per topic; beyond it the oldest are forgotten early."""


class _Envelope:
    """One published message, shared by the queues of every group it was delivered to."""

    __slots__ = ("data", "expires_at", "headers", "msg_id", "pending", "priority")

    def __init__(
        self,
        data: bytes,
        headers: Mapping[str, str],
        msg_id: str | None,
        expires_at: float | None,
        priority: int,
    ) -> None:
        self.data = data
        self.headers = headers
        self.msg_id = msg_id
        self.expires_at = expires_at
        self.priority = priority
        self.pending = 0
        """Groups that still owe an acknowledgement."""


_Item = tuple[_Envelope, int]
"""A queued delivery: the envelope and the attempt it will be."""


class _Queue:
    """A priority queue that costs a deque's O(1) when every priority is equal.

    One deque per priority level, and a sorted list of the levels that are not empty.
    Redeliveries go to the front of their level, as a negative acknowledgement does on NATS.
    """

    __slots__ = ("_by_level", "_levels", "size")

    def __init__(self) -> None:
        self._by_level: dict[int, deque[_Item]] = {}
        self._levels: list[int] = []  # negated priorities, ascending: highest priority first
        self.size = 0

    def push(self, item: _Item, *, front: bool = False) -> None:
        level = -item[0].priority
        items = self._by_level.get(level)
        if items is None:
            items = self._by_level[level] = deque()
        if not items:
            bisect.insort(self._levels, level)
        if front:
            items.appendleft(item)
        else:
            items.append(item)
        self.size += 1

    def pop(self) -> _Item | None:
        if not self.size:
            return None
        level = self._levels[0]
        items = self._by_level[level]
        item = items.popleft()
        if not items:
            del self._levels[0]
        self.size -= 1
        return item

    def drain(self) -> list[_Item]:
        out: list[_Item] = []
        while (item := self.pop()) is not None:
            out.append(item)
        return out


class _Group:
    """A queue shared by competing members; a named group outlives its members."""

    __slots__ = ("idle", "members", "name", "queue")

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.queue = _Queue()
        self.members: set[MemorySubscription] = set()
        self.idle: deque[asyncio.Future[None]] = deque()

    def push(self, item: _Item, *, front: bool = False) -> None:
        self.queue.push(item, front=front)
        self.wake_one()

    def wake_one(self) -> None:
        idle = self.idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class _Topic:
    """Per-topic state: groups, the capacity count and its waiting publishers, dedup ids."""

    __slots__ = ("dedup", "groups", "in_flight", "name", "retained", "waiters", "with_ttl")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.groups: dict[str, _Group] = {}
        self.in_flight = 0
        self.with_ttl = 0
        """Held messages that have a TTL; when 0 there is nothing to expire early."""
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.dedup: dict[str, float] = {}
        self.retained: deque[_Envelope] | None = (
            deque(maxlen=capacity) if is_dead_letter_topic(name) else None
        )

    def release(self, env: _Envelope) -> None:
        """One group is done with ``env``; when all are, it stops counting against capacity."""
        env.pending -= 1
        if env.pending or self.retained is not None:
            return
        self.in_flight -= 1
        if env.expires_at is not None:
            self.with_ttl -= 1
        self.wake_publisher()

    def wake_publisher(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class MemoryFabric(Lifecycle):
    """The in-process fabric (``memory://``). Each instance is its own broker.

    >>> async def example() -> None:
    ...     async with MemoryFabric(MemoryOptions(capacity=100)) as fabric:
    ...         seen: list[bytes] = []
    ...         async def handler(msg: Message) -> None:
    ...             seen.append(msg.data)
    ...         await fabric.subscribe("greetings", handler)
    ...         await fabric.publish("greetings", b"hello")
    """

    def __init__(self, options: MemoryOptions | None = None) -> None:
        self._options = options or MemoryOptions()
        self._clock = self._options.clock
        self._topics: dict[str, _Topic] = {}
        self._subs: set[MemorySubscription] = set()
        self._ids = itertools.count(1)
        self._reaper: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._open = False

    @property
    def options(self) -> MemoryOptions:
        return self._options

    async def start(self) -> None:
        if self._closed:
            raise FailedPrecondition("the memory fabric is closed; open a new one")
        self._started = True
        self._open = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._open = False
        if self._subs:
            await asyncio.gather(*(sub.close() for sub in list(self._subs)))
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.wait({self._reaper})
        for topic in self._topics.values():
            while topic.waiters:
                waiter = topic.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(FailedPrecondition("the fabric closed during publish"))

    def _check_open(self) -> None:
        if not self._started or self._closed:
            state = "closed" if self._closed else "not started"
            raise FailedPrecondition(f"the memory fabric is {state}")

    def _topic(self, name: str, *, checked: bool = False) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            if not checked:
                check_topic(name)
            topic = self._topics[name] = _Topic(name, self._options.capacity)
        return topic

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
        if not self._open:
            self._check_open()
        options = self._options
        if ttl is not None or timeout is not None or len(data) > options.max_message_bytes:
            check_publish(options, topic, data, ttl, timeout)
        state = self._topics.get(topic) or self._topic(topic)
        sent = None
        if headers is not None or options.request_id is not None or otel_context.get_current():
            sent = outgoing_headers(headers, options.request_id)
        expires_at = None
        if msg_id is not None or ttl is not None:
            now = self._clock()
            if msg_id is not None and self._seen(state, check_msg_id(msg_id), now):
                return
            if ttl is not None:
                expires_at = now + ttl
        if state.retained is None:
            if not state.groups:
                return  # nobody has ever subscribed: nothing would hold the message
            if state.in_flight >= options.capacity:
                await self._make_room(state, timeout)
        env = _Envelope(
            data,
            EMPTY_HEADERS if sent is None else MappingProxyType(sent),
            msg_id,
            expires_at,
            priority,
        )
        self._enqueue(state, env)

    def _enqueue(self, state: _Topic, env: _Envelope) -> None:
        if state.retained is not None:
            state.retained.append(env)
        else:
            state.in_flight += 1
            if env.expires_at is not None:
                state.with_ttl += 1
        groups = state.groups
        env.pending = len(groups)
        item = (env, 1)
        for group in groups.values():
            group.queue.push(item)
            if group.idle:
                group.wake_one()

    def _seen(self, state: _Topic, msg_id: str, now: float) -> bool:
        """Whether ``msg_id`` was published within the dedup window; remembers it if not."""
        dedup = state.dedup
        # Ids are inserted in time order, so the expired ones are at the front.
        while dedup:
            oldest = next(iter(dedup))
            if dedup[oldest] > now and len(dedup) < _DEDUP_MAX:
                break
            del dedup[oldest]
        if msg_id in dedup:
            return True
        dedup[msg_id] = now + self._options.dedup_window
        return False

    async def _make_room(self, state: _Topic, limit: float | None) -> None:
        """Wait (or refuse) until ``state`` is below capacity; see ``FabricOptions``."""
        options = self._options
        if state.with_ttl:
            self._expire(state)
        if state.in_flight < options.capacity:
            return
        full = (
            f"topic {state.name!r} is at capacity ({options.capacity} messages "
            f"not yet acknowledged)"
        )
        if options.backpressure == "refuse":
            raise ResourceExhausted(full)
        by_deadline = limit is not None and limit < options.max_wait
        budget = limit if by_deadline and limit is not None else options.max_wait
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + budget
        while state.in_flight >= options.capacity:
            waiter: asyncio.Future[None] = loop.create_future()
            state.waiters.append(waiter)
            woken = False
            try:
                async with asyncio.timeout_at(give_up_at):
                    await waiter
                woken = True
            except TimeoutError as exc:
                if by_deadline:
                    raise DeadlineExceeded(
                        f"publish to {state.name!r} timed out after {budget:g}s waiting for room"
                    ) from exc
                raise ResourceExhausted(f"{full}; waited {budget:g}s for room") from exc
            finally:
                if not waiter.done():
                    waiter.cancel()
                elif not woken and not waiter.cancelled() and waiter.exception() is None:
                    state.wake_publisher()  # room was given to us but we leave: pass it on
            self._check_open()

    def _expire(self, state: _Topic) -> None:
        """Drop messages whose TTL passed before delivery, freeing their room now."""
        now = self._clock()
        for group in state.groups.values():
            kept: list[_Item] = []
            for item in group.queue.drain():
                env, attempt = item
                if attempt == 1 and env.expires_at is not None and now >= env.expires_at:
                    state.release(env)
                else:
                    kept.append(item)
            for item in kept:
                group.queue.push(item)

    def dead_letter(
        self, topic: str, env: _Envelope, group: str | None, attempts: int, error: str
    ) -> None:
        """Move ``env`` to ``dlq.<topic>``, recording why."""
        headers = dead_letter_headers(
            env.headers, topic=topic, group=group, attempts=attempts, error=error, msg_id=env.msg_id
        )
        dead = _Envelope(env.data, MappingProxyType(headers), None, None, 0)
        log.warning("dead-lettered a message of %s after %d attempts: %s", topic, attempts, error)
        self._enqueue(self._topic(dead_letter_topic(topic), checked=True), dead)

    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        group: str | None = None,
        max_attempts: int = 5,
        ack_wait: float = 30.0,
    ) -> MemorySubscription:
        self._check_open()
        check_group(group)
        check_subscribe(max_attempts, ack_wait)
        state = self._topic(topic)
        key = group if group is not None else f"\0{next(self._ids)}"
        members = state.groups.get(key)
        if members is None:
            members = state.groups[key] = _Group(group)
            if state.retained is not None:
                for env in state.retained:
                    env.pending += 1
                    members.queue.push((env, 1))
        sub = MemorySubscription(self, state, members, key, handler, max_attempts, ack_wait)
        self._subs.add(sub)
        members.members.add(sub)
        sub.begin()
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap(), name="fabric-memory-ack-wait")
        return sub

    def forget(self, sub: MemorySubscription) -> None:
        """A subscription ended: drop it, and an ungrouped subscriber's private queue too."""
        self._subs.discard(sub)
        group = sub.members
        group.members.discard(sub)
        if group.name is None:
            state = sub.state
            state.groups.pop(sub.key, None)
            for env, _ in group.queue.drain():
                state.release(env)

    async def _reap(self) -> None:
        """Redeliver what a handler has held past its ``ack_wait``, as JetStream does."""
        while True:
            waits = [sub.ack_wait for sub in self._subs]
            await asyncio.sleep(min(1.0, max(0.005, min(waits, default=1.0) / 4)))
            now = self._clock()
            for sub in list(self._subs):
                sub.expire_if_held_since(now)


class MemorySubscription(Worker):
    """One member of a group on a :class:`MemoryFabric` topic."""

    def __init__(
        self,
        fabric: MemoryFabric,
        state: _Topic,
        members: _Group,
        key: str,
        handler: Handler,
        max_attempts: int,
        ack_wait: float,
    ) -> None:
        super().__init__(state.name, members.name, fabric.options.drain_timeout)
        self._fabric = fabric
        self.state = state
        self.members = members
        self.key = key
        self._handler = handler
        self._max_attempts = max_attempts
        self.ack_wait = ack_wait
        self._clock = fabric.options.clock
        self._current: _Item | None = None
        self._seen: _Item | None = None
        """The delivery the reaper saw last, and when (see ``expire_if_held_since``)."""
        self._seen_at = 0.0

    def expire_if_held_since(self, now: float) -> None:
        """Give the current message to another member if it has been held past ``ack_wait``.

        Called by the fabric's reaper on every tick. The reaper, not the delivery, notes when it
        first saw a delivery, which keeps a clock read off the hot path; a delivery is therefore
        redelivered after between one and about one and a half ``ack_wait``, never before.
        """
        item = self._current
        if item is None or item is not self._seen:
            self._seen, self._seen_at = item, now
            return
        if now - self._seen_at >= self.ack_wait:
            self._current = self._seen = None  # the late outcome of this delivery is ignored
            env, attempt = item
            log.info("redelivering a message of %s held past ack_wait", self.topic)
            self.members.push((env, attempt + 1), front=True)

    async def _run(self) -> None:
        state = self.state
        topic = state.name
        queue = self.members.queue
        handler = self._handler
        try:
            while not self._stopping:
                item = queue.pop()
                if item is None:
                    await self._idle()
                    continue
                env, attempt = item
                if (attempt > 1 or env.expires_at is not None) and self._skip(env, attempt):
                    continue
                self._current = item
                try:
                    await handler(Message(topic, env.data, env.headers, env.msg_id, attempt))
                except asyncio.CancelledError:
                    if self._current is item:
                        self.members.push((env, attempt + 1), front=True)
                    raise
                except Exception as exc:
                    if self._current is item:  # else it was redelivered after ack_wait
                        self._failed(env, attempt, exc)
                else:
                    if self._current is item:
                        state.release(env)
                finally:
                    self._current = None
        finally:
            self._closed = True
            self._fabric.forget(self)

    async def _idle(self) -> None:
        """Wait until the group's queue may have something."""
        group = self.members
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        group.idle.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                group.wake_one()  # we were woken but will not pop: pass it on
            raise

    def _skip(self, env: _Envelope, attempt: int) -> bool:
        """Whether ``env`` is done with before its handler runs: expired, or out of attempts."""
        if attempt == 1 and env.expires_at is not None and self._clock() >= env.expires_at:
            self.state.release(env)
            return True
        if attempt > self._max_attempts:
            error = f"not acknowledged after {attempt - 1} deliveries"
            self._fabric.dead_letter(self.topic, env, self.group, attempt - 1, error)
            self.state.release(env)
            return True
        return False

    def _failed(self, env: _Envelope, attempt: int, exc: Exception) -> None:
        """The handler raised: redeliver, or dead-letter after the last attempt."""
        if attempt >= self._max_attempts:
            self._fabric.dead_letter(self.topic, env, self.group, attempt, describe_error(exc))
            self.state.release(env)
        else:
            log.debug("handler for %s failed (attempt %d): %r", self.topic, attempt, exc)
            self.members.push((env, attempt + 1), front=True)
