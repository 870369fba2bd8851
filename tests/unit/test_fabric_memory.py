"""What only the in-memory fabric does (priority) and what a manual clock pins down exactly."""

from __future__ import annotations

import asyncio

import pytest

from runtime.errors import FailedPrecondition, ResourceExhausted
from runtime.fabric import DLQ_ERROR_HEADER, Message
from runtime.fabric._memory import MemoryFabric
from runtime.fabric._types import MemoryOptions


class ManualClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Inbox:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    async def __call__(self, msg: Message) -> None:
        self.data.append(msg.data)


async def drain() -> None:
    """Let every ready task run until the in-memory fabric has nothing left to deliver."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_higher_priority_is_delivered_first_and_equal_priority_in_order() -> None:
    inbox = Inbox()
    async with MemoryFabric() as fabric:
        await fabric.subscribe("tickets", inbox, group="desk")
        # Publishing never yields below capacity, so all five are queued before delivery starts.
        for data, priority in [(b"a0", 0), (b"b5", 5), (b"c0", 0), (b"d9", 9), (b"e5", 5)]:
            await fabric.publish("tickets", data, priority=priority)
        await drain()
    assert inbox.data == [b"d9", b"b5", b"e5", b"a0", b"c0"]


async def test_a_msg_id_is_forgotten_after_the_dedup_window() -> None:
    clock = ManualClock()
    inbox = Inbox()
    async with MemoryFabric(MemoryOptions(clock=clock, dedup_window=60)) as fabric:
        await fabric.subscribe("mail", inbox)
        await fabric.publish("mail", b"one", msg_id="m")
        clock.advance(59)
        await fabric.publish("mail", b"dup", msg_id="m")
        clock.advance(2)
        await fabric.publish("mail", b"again", msg_id="m")
        await drain()
    assert inbox.data == [b"one", b"again"]


async def test_ttl_is_measured_on_the_fabric_clock_up_to_the_first_delivery() -> None:
    clock = ManualClock()
    inbox = Inbox()
    async with MemoryFabric(MemoryOptions(clock=clock)) as fabric:
        await fabric.subscribe("quotes", inbox)
        await fabric.publish("quotes", b"short", ttl=5)
        await fabric.publish("quotes", b"long", ttl=50)
        clock.advance(10)  # before the subscriber gets to run
        await drain()
    assert inbox.data == [b"long"]


async def test_expired_messages_give_their_room_back_to_publishers() -> None:
    clock = ManualClock()
    inbox = Inbox()
    options = MemoryOptions(clock=clock, capacity=2, backpressure="refuse")
    async with MemoryFabric(options) as fabric:
        await fabric.subscribe("quotes", inbox)
        await fabric.publish("quotes", b"stale-1", ttl=1)
        await fabric.publish("quotes", b"stale-2", ttl=1)
        with pytest.raises(ResourceExhausted):
            await fabric.publish("quotes", b"too soon")
        clock.advance(2)
        await fabric.publish("quotes", b"fresh")
        await drain()
    assert inbox.data == [b"fresh"]


async def test_a_dead_letter_topic_keeps_only_its_newest_capacity_letters() -> None:
    async def poisoned(msg: Message) -> None:
        raise RuntimeError(msg.data.decode())

    async with MemoryFabric(MemoryOptions(capacity=3)) as fabric:
        await fabric.subscribe("jobs", poisoned, max_attempts=1)
        for i in range(5):
            await fabric.publish("jobs", b"job-%d" % i)
            await drain()
        seen: list[Message] = []

        async def operator(msg: Message) -> None:
            seen.append(msg)

        await fabric.subscribe("dlq.jobs", operator)
        await drain()
    assert [m.data for m in seen] == [b"job-2", b"job-3", b"job-4"]
    assert [m.headers[DLQ_ERROR_HEADER] for m in seen] == [
        "RuntimeError: job-2",
        "RuntimeError: job-3",
        "RuntimeError: job-4",
    ]


async def test_a_publish_waiting_for_room_fails_cleanly_when_the_fabric_closes() -> None:
    fabric = MemoryFabric(MemoryOptions(capacity=1, max_wait=30, drain_timeout=0))
    await fabric.start()
    release = asyncio.Event()

    async def stuck(msg: Message) -> None:
        await release.wait()

    await fabric.subscribe("uploads", stuck)
    await fabric.publish("uploads", b"held")
    waiting = asyncio.create_task(fabric.publish("uploads", b"waiting"))
    await drain()
    await fabric.close()
    with pytest.raises(FailedPrecondition, match="closed"):
        await waiting


async def test_a_handler_may_close_its_own_subscription() -> None:
    seen: list[bytes] = []
    async with MemoryFabric() as fabric:

        async def once(msg: Message) -> None:
            seen.append(msg.data)
            await sub.close()

        sub = await fabric.subscribe("once", once)
        await fabric.publish("once", b"first")
        await fabric.publish("once", b"second")
        await drain()
        assert sub.closed
    assert seen == [b"first"]


async def test_a_subscription_is_an_async_context_manager_that_closes() -> None:
    async with MemoryFabric() as fabric:
        inbox = Inbox()
        async with await fabric.subscribe("ctx", inbox) as sub:
            await fabric.publish("ctx", b"inside")
            await drain()
        assert sub.closed
        await fabric.publish("ctx", b"after")  # no subscriber left: nothing holds it
        await drain()
    assert inbox.data == [b"inside"]


async def test_publishing_before_start_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="not started"):
        await MemoryFabric().publish("t", b"x")
