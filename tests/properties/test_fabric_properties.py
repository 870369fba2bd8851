"""Fabric properties from SPEC section 8, checked on the in-memory fabric.

The same behaviours run by example against NATS JetStream in
``tests/integration/test_fabric_contract.py``; a hundred examples per property against a real
server would make the suite slow without exploring anything the memory model does not.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import cast

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from runtime.errors import DeadlineExceeded, ResourceExhausted
from runtime.fabric import Message
from runtime.fabric._memory import MemoryFabric
from runtime.fabric._types import Backpressure, Handler, MemoryOptions


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Yield to the fabric's tasks until ``predicate()`` holds."""
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(0)


@settings(max_examples=100, deadline=None)
@given(
    loners=st.integers(min_value=0, max_value=3),
    groups=st.lists(st.integers(min_value=1, max_value=3), max_size=3),
    count=st.integers(min_value=1, max_value=25),
    flaky=st.sets(st.integers(min_value=0, max_value=24)),
    priorities=st.lists(st.integers(min_value=-2, max_value=2), min_size=25, max_size=25),
)
def test_property_31_a_global_topic_reaches_every_subscriber(
    loners: int, groups: list[int], count: int, flaky: set[int], priorities: list[int]
) -> None:
    """Property 31: A global topic reaches every subscriber.

    Every ungrouped subscriber handles every message once, and every group handles every message
    once across its members, even when some first deliveries fail and are redelivered.
    """
    assume(loners + len(groups) > 0)

    async def scenario() -> tuple[list[Counter[int]], list[Counter[int]]]:
        loner_seen = [Counter[int]() for _ in range(loners)]
        group_seen = [Counter[int]() for _ in groups]

        def handler(seen: Counter[int]) -> Handler:
            async def handle(msg: Message) -> None:
                index = int(msg.data)
                if index in flaky and msg.attempt == 1:
                    raise RuntimeError("first delivery fails")
                seen[index] += 1

            return handle

        async with MemoryFabric() as fabric:
            for seen in loner_seen:
                await fabric.subscribe("news", handler(seen))
            for g, (members, seen) in enumerate(zip(groups, group_seen, strict=True)):
                for _ in range(members):
                    await fabric.subscribe("news", handler(seen), group=f"g{g}")
            for i in range(count):
                await fabric.publish("news", b"%d" % i, priority=priorities[i])
            await until(lambda: all(sum(s.values()) == count for s in loner_seen + group_seen))
        return loner_seen, group_seen

    loner_seen, group_seen = asyncio.run(scenario())
    everything = Counter(range(count))
    for seen in loner_seen + group_seen:
        assert seen == everything


@settings(max_examples=100, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=12),
    extra=st.integers(min_value=1, max_value=4),
    mode=st.sampled_from(["refuse", "wait"]).map(lambda m: cast(Backpressure, m)),
    caller_timeout=st.sampled_from([None, 0.002]),
)
def test_property_43_backpressure_is_applied_and_a_timeout_reaches_the_caller(
    capacity: int, extra: int, mode: Backpressure, caller_timeout: float | None
) -> None:
    """Property 43: Backpressure is applied and a timeout reaches the LCC.

    With a consumer that acknowledges nothing, exactly ``capacity`` publishes are accepted.
    Every further publish ends promptly (never hangs): refused with ResourceExhausted, or, when
    waiting, with DeadlineExceeded if the caller's timeout is the shorter bound and
    ResourceExhausted after ``max_wait`` otherwise. Once the consumer catches up, publishing
    works again.
    """
    max_wait = 0.01

    async def scenario() -> tuple[list[type[BaseException]], int]:
        release = asyncio.Event()
        handled = 0

        async def slow(msg: Message) -> None:
            nonlocal handled
            await release.wait()
            handled += 1

        outcomes: list[type[BaseException]] = []
        options = MemoryOptions(capacity=capacity, backpressure=mode, max_wait=max_wait)
        async with MemoryFabric(options) as fabric:
            await fabric.subscribe("jobs", slow, group="workers")
            for i in range(capacity):
                async with asyncio.timeout(1):
                    await fabric.publish("jobs", b"%d" % i)
            for _ in range(extra):
                try:
                    async with asyncio.timeout(1):  # a hang fails the property
                        await fabric.publish("jobs", b"over", timeout=caller_timeout)
                except (ResourceExhausted, DeadlineExceeded) as exc:
                    outcomes.append(type(exc))
            release.set()
            await until(lambda: handled == capacity)
            await fabric.publish("jobs", b"after", timeout=0.5)
            await until(lambda: handled == capacity + 1)
        return outcomes, handled

    outcomes, handled = asyncio.run(scenario())
    if mode == "refuse" or caller_timeout is None:
        expected: type[BaseException] = ResourceExhausted
    else:
        expected = DeadlineExceeded
    assert outcomes == [expected] * extra
    assert handled == capacity + 1
