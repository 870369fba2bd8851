"""The fabric contract, written once and run against every backend (memory and NATS JetStream).

NATS runs use a random subject/stream prefix per test and delete their streams afterwards, so
runs never see each other's messages. Under CI=true the NATS runs are mandatory.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import get_current_span

from runtime.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
)
from runtime.fabric import (
    DLQ_ATTEMPTS_HEADER,
    DLQ_ERROR_HEADER,
    DLQ_GROUP_HEADER,
    DLQ_TOPIC_HEADER,
    Fabric,
    FabricHub,
    Message,
    dead_letter_topic,
    open_fabric,
)
from runtime.identity import Peer
from runtime.tls import InternalTls
from tests.services import require_nats

pytestmark = pytest.mark.timeout(60)


async def until(predicate: Callable[[], bool], within: float = 5.0, every: float = 0.005) -> None:
    """Wait until ``predicate()`` holds; the handlers that make it true run on this loop."""
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(every)


MakeFabric = Callable[..., Awaitable[Fabric]]


class Inbox:
    """A handler that records what it receives and lets a test wait for it."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = asyncio.Event()

    async def __call__(self, msg: Message) -> None:
        self.messages.append(msg)
        self._changed.set()

    @property
    def data(self) -> list[bytes]:
        return [m.data for m in self.messages]

    async def wait_for(self, count: int, within: float = 5.0) -> list[Message]:
        async with asyncio.timeout(within):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages


def assert_redelivery(fabric: MakeFabric, msg: Message) -> None:
    """A redelivered message says so in ``attempt``.

    Only pinned on memory: nats-server 2.9 now and then reports a redelivery with JetStream's
    delivery count still at 1 (documented in ``runtime.fabric._nats``); that the message came
    back at all is what the callers assert on both backends.
    """
    if fabric.backend == "memory":  # type: ignore[attr-defined]
        assert msg.attempt == 2


async def settle(seconds: float = 0.3) -> None:
    """Give a backend time to deliver anything it still might (to check that it does not)."""
    await asyncio.sleep(seconds)


async def _delete_streams(prefix: str) -> None:
    nc = await nats.connect(require_nats())
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefix + "_"):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


class AnyTopic:
    """A hub policy letting every module use every topic: the contract is about delivery here
    (the hub's own refusals are tested in test_security_hub)."""

    def check(self, peer: Peer, action: str, topic: str) -> None:
        return None


@pytest.fixture(params=["memory", "nats", "hub"])
async def make_fabric(request: pytest.FixtureRequest, tls_dir: Path) -> AsyncIterator[MakeFabric]:
    """Open started fabrics of one backend; on NATS they share a prefix, so they share topics.

    ``hub`` is the memory fabric served to other processes by ``modrpc up``: the first call
    starts a hub around a memory fabric built with the call's options, and every call returns
    a client of that hub (``hub://``), as each worker process has.
    """
    backend: str = request.param
    url = {"memory": "memory://", "hub": "memory://"}.get(backend) or require_nats()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    opened: list[Fabric] = []
    hubs: list[FabricHub] = []

    async def make(**options: Any) -> Fabric:
        options.setdefault("drain_timeout", 0.5)
        if backend == "nats":
            options.setdefault("prefix", prefix)
            options.setdefault("storage", "memory")
        if backend == "hub":
            if not hubs:
                inner = open_fabric("memory://", **options)
                await inner.start()
                opened.append(inner)
                hub_tls = InternalTls.load(tls_dir, Peer.hub(), dev_ca=True)
                hubs.append(FabricHub(inner, tls=hub_tls, policy=AnyTopic()))
                await hubs[0].start()
            client_options = {k: v for k, v in options.items() if k in ("request_id", "drain_timeout")}
            worker_tls = InternalTls.load(tls_dir, Peer.module("probe"), dev_ca=True)
            fabric = open_fabric(hubs[0].url, tls=worker_tls, **client_options)
        else:
            fabric = open_fabric(url, **options)
        await fabric.start()
        opened.append(fabric)
        return fabric

    make.backend = backend  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for fabric in reversed(opened):
            await fabric.close()
        for hub in hubs:
            await hub.stop()
        if backend == "nats":
            await _delete_streams(prefix)


# --- delivery --------------------------------------------------------------------------------


async def test_every_ungrouped_subscriber_and_every_group_gets_every_message(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric()
    loners = [Inbox(), Inbox()]
    billing = [Inbox(), Inbox()]
    audit = Inbox()
    for inbox in loners:
        await fabric.subscribe("orders.created", inbox)
    for inbox in billing:
        await fabric.subscribe("orders.created", inbox, group="billing")
    await fabric.subscribe("orders.created", audit, group="audit")

    sent = [f"order-{i}".encode() for i in range(20)]
    for data in sent:
        await fabric.publish("orders.created", data)

    for inbox in [*loners, audit]:
        await inbox.wait_for(len(sent))
    await until(lambda: sum(len(i.messages) for i in billing) >= len(sent))
    await settle()
    for inbox in [*loners, audit]:
        assert sorted(inbox.data) == sorted(sent)
    shared = [data for inbox in billing for data in inbox.data]
    assert sorted(shared) == sorted(sent), "each message reaches exactly one member of a group"


async def test_a_delivery_carries_topic_data_headers_msg_id_and_first_attempt(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric()
    inbox = Inbox()
    await fabric.subscribe("users.renamed", inbox, group="search")
    await fabric.publish("users.renamed", b"\x00payload", headers={"tenant": "acme"}, msg_id="m-1")

    (msg,) = await inbox.wait_for(1)
    assert msg.topic == "users.renamed"
    assert msg.data == b"\x00payload"
    assert msg.headers["tenant"] == "acme"
    assert msg.msg_id == "m-1"
    assert msg.attempt == 1


async def test_publishing_to_a_topic_nobody_subscribed_to_delivers_nothing_later(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric()
    await fabric.publish("nobody.listens", b"lost on purpose")
    inbox = Inbox()
    await fabric.subscribe("nobody.listens", inbox, group="late")
    await fabric.publish("nobody.listens", b"after")
    await inbox.wait_for(1)
    await settle()
    assert inbox.data == [b"after"]


# --- redelivery and dead letters -------------------------------------------------------------


async def test_a_raising_handler_gets_the_message_again_until_it_succeeds(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric()
    attempts: list[int] = []
    done = asyncio.Event()

    async def flaky(msg: Message) -> None:
        attempts.append(msg.attempt)
        if msg.attempt < 3:
            raise RuntimeError("not yet")
        done.set()

    dead = Inbox()
    await fabric.subscribe(dead_letter_topic("jobs"), dead)
    await fabric.subscribe("jobs", flaky, group="workers", max_attempts=5)
    await fabric.publish("jobs", b"job")
    async with asyncio.timeout(5):
        await done.wait()
    await settle()
    assert attempts == [1, 2, 3]
    assert dead.messages == []


async def test_a_poison_message_is_dead_lettered_with_its_error_after_max_attempts(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric()
    attempts: list[int] = []

    async def poisoned(msg: Message) -> None:
        attempts.append(msg.attempt)
        raise ValueError(f"cannot parse {msg.data!r}")

    dead = Inbox()
    await fabric.subscribe(dead_letter_topic("payments"), dead)
    await fabric.subscribe("payments", poisoned, group="ledger", max_attempts=3)
    await fabric.publish("payments", b"garbage", headers={"tenant": "acme"})

    (letter,) = await dead.wait_for(1)
    await settle()
    assert attempts == [1, 2, 3]
    assert letter.topic == "dlq.payments"
    assert letter.data == b"garbage"
    assert letter.headers[DLQ_ERROR_HEADER] == "ValueError: cannot parse b'garbage'"
    assert letter.headers[DLQ_ATTEMPTS_HEADER] == "3"
    assert letter.headers[DLQ_TOPIC_HEADER] == "payments"
    assert letter.headers[DLQ_GROUP_HEADER] == "ledger"
    assert letter.headers["tenant"] == "acme"


async def test_dead_letters_wait_for_a_subscriber_that_comes_later(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric()
    failures = 0

    async def poisoned(msg: Message) -> None:
        nonlocal failures
        failures += 1
        raise KeyError("missing")

    await fabric.subscribe("emails", poisoned, max_attempts=2)
    await fabric.publish("emails", b"first")
    await fabric.publish("emails", b"second")
    await until(lambda: failures >= 4)

    dead = Inbox()
    await fabric.subscribe(dead_letter_topic("emails"), dead, group="operators")
    letters = await dead.wait_for(2)
    assert sorted(m.data for m in letters) == [b"first", b"second"]
    assert all(m.headers[DLQ_ERROR_HEADER] == "KeyError: 'missing'" for m in letters)


# --- exactly-once and TTL --------------------------------------------------------------------


async def test_a_repeated_msg_id_is_delivered_once(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric()
    inbox = Inbox()
    await fabric.subscribe("invoices", inbox, group="mailer")
    for _ in range(3):
        await fabric.publish("invoices", b"invoice 7", msg_id="invoice-7")
    await fabric.publish("invoices", b"invoice 8", msg_id="invoice-8")
    await fabric.publish("invoices", b"no id")
    await fabric.publish("invoices", b"no id")

    await inbox.wait_for(4)
    await settle()
    assert sorted(inbox.data) == [b"invoice 7", b"invoice 8", b"no id", b"no id"]


async def test_a_message_not_delivered_within_its_ttl_is_dropped(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric()
    release = asyncio.Event()
    seen: list[bytes] = []

    async def slow(msg: Message) -> None:
        seen.append(msg.data)
        if msg.data == b"blocker":
            await release.wait()

    await fabric.subscribe("quotes", slow, group="pricing")
    await fabric.publish("quotes", b"blocker")
    await until(lambda: bool(seen))
    await fabric.publish("quotes", b"stale", ttl=0.2)
    await fabric.publish("quotes", b"fresh", ttl=30)
    await fabric.publish("quotes", b"forever")
    await asyncio.sleep(0.4)
    release.set()
    await until(lambda: len(seen) >= 3)
    await settle()
    assert seen == [b"blocker", b"fresh", b"forever"]


# --- backpressure (Property 43 by example, on both backends) ---------------------------------


async def _fill(fabric: Fabric, topic: str, count: int) -> asyncio.Event:
    """Subscribe a member that never finishes, then publish ``count`` messages it holds."""
    release = asyncio.Event()

    async def stuck(msg: Message) -> None:
        await release.wait()

    await fabric.subscribe(topic, stuck, group="stuck")
    for i in range(count):
        await fabric.publish(topic, b"%d" % i)
    return release


async def test_publish_at_capacity_is_refused_naming_topic_and_capacity(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric(capacity=3, backpressure="refuse")
    await _fill(fabric, "uploads", 3)
    started = time.monotonic()
    with pytest.raises(ResourceExhausted) as caught:
        await fabric.publish("uploads", b"one too many")
    assert time.monotonic() - started < 1.0
    assert "'uploads'" in caught.value.message
    assert "capacity (3 messages" in caught.value.message


async def test_publish_at_capacity_waits_up_to_max_wait_then_is_refused(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric(capacity=2, backpressure="wait", max_wait=0.3)
    await _fill(fabric, "uploads", 2)
    started = time.monotonic()
    with pytest.raises(ResourceExhausted) as caught:
        await fabric.publish("uploads", b"waits")
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 2.0
    assert "'uploads'" in caught.value.message and "waited 0.3s" in caught.value.message


async def test_a_publish_timeout_shorter_than_max_wait_surfaces_as_deadline_exceeded(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric(capacity=2, backpressure="wait", max_wait=10.0)
    await _fill(fabric, "uploads", 2)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await fabric.publish("uploads", b"in a hurry", timeout=0.2)
    assert time.monotonic() - started < 2.0


async def test_a_waiting_publish_goes_through_once_room_frees(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(capacity=2, backpressure="wait", max_wait=10.0)
    release = await _fill(fabric, "uploads", 2)
    waiting = asyncio.create_task(fabric.publish("uploads", b"patient", timeout=8))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    release.set()
    async with asyncio.timeout(8):
        await waiting
    assert waiting.exception() is None


async def test_cancelling_a_waiting_publish_cancels_it(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(capacity=1, backpressure="wait", max_wait=10.0)
    await _fill(fabric, "uploads", 1)
    waiting = asyncio.create_task(fabric.publish("uploads", b"abandoned"))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert waiting.cancelled()


async def test_an_oversized_message_is_refused_before_it_is_sent(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(max_message_bytes=1024)
    with pytest.raises(ResourceExhausted, match="2048 bytes; the limit is 1024"):
        await fabric.publish("files", b"x" * 2048)


# --- crashes and closing: nothing is lost ----------------------------------------------------


async def test_a_subscriber_whose_task_dies_mid_handler_loses_no_message(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric()
    doomed_task: list[asyncio.Task[Any]] = []
    entered = asyncio.Event()

    async def doomed(msg: Message) -> None:
        task = asyncio.current_task()
        assert task is not None
        doomed_task.append(task)
        entered.set()
        await asyncio.Event().wait()  # stuck until its task is cancelled

    doomed_sub = await fabric.subscribe("tasks", doomed, group="workers", ack_wait=1.0)
    sent = [b"%d" % i for i in range(10)]
    await fabric.publish("tasks", sent[0])
    async with asyncio.timeout(5):
        await entered.wait()
    survivor = Inbox()
    await fabric.subscribe("tasks", survivor, group="workers", ack_wait=1.0)
    for data in sent[1:]:
        await fabric.publish("tasks", data)

    doomed_task[0].cancel()  # the subscriber "crashes" in the middle of its handler
    await survivor.wait_for(len(sent), within=10)
    assert sorted(survivor.data) == sorted(sent)
    redelivered = [m for m in survivor.messages if m.data == sent[0]]
    assert_redelivery(make_fabric, redelivered[0])
    await until(lambda: doomed_sub.closed)


async def test_closing_a_subscription_mid_handler_hands_its_message_to_another_member(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric(drain_timeout=0.1)
    entered = asyncio.Event()

    async def slow(msg: Message) -> None:
        entered.set()
        await asyncio.Event().wait()

    slow_sub = await fabric.subscribe("reports", slow, group="renderers")
    await fabric.publish("reports", b"quarterly")
    async with asyncio.timeout(5):
        await entered.wait()
    other = Inbox()
    await fabric.subscribe("reports", other, group="renderers")
    await slow_sub.close()
    await slow_sub.close()  # safe twice
    (msg,) = await other.wait_for(1)
    assert msg.data == b"quarterly"
    assert_redelivery(make_fabric, msg)
    assert slow_sub.closed


async def test_a_group_keeps_its_messages_while_it_has_no_members(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric()
    first = Inbox()
    member = await fabric.subscribe("signups", first, group="welcome")
    await fabric.publish("signups", b"ann")
    await first.wait_for(1)
    await member.close()

    await fabric.publish("signups", b"bob")
    await fabric.publish("signups", b"cy")
    later = Inbox()
    await fabric.subscribe("signups", later, group="welcome")
    await later.wait_for(2)
    await settle()
    assert sorted(later.data) == [b"bob", b"cy"]


async def test_a_delivery_held_past_ack_wait_goes_to_another_member(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric()
    release = asyncio.Event()
    deliveries: list[tuple[str, Message]] = []
    redelivered = asyncio.Event()

    def member(name: str) -> Callable[[Message], Awaitable[None]]:
        async def handle(msg: Message) -> None:
            deliveries.append((name, msg))
            if len(deliveries) == 1:
                await release.wait()  # the first delivery hangs past ack_wait
            else:
                redelivered.set()

        return handle

    await fabric.subscribe("exports", member("a"), group="exporters", ack_wait=0.5)
    await fabric.subscribe("exports", member("b"), group="exporters", ack_wait=0.5)
    await fabric.publish("exports", b"big export")
    async with asyncio.timeout(10):
        await redelivered.wait()
    release.set()
    (first_name, _), (second_name, second) = deliveries[:2]
    assert second.data == b"big export"
    assert first_name != second_name, "the hung member could not have taken it again"
    assert_redelivery(make_fabric, second)


async def test_closing_the_fabric_lets_a_running_handler_finish(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(drain_timeout=5.0)
    entered = asyncio.Event()
    finished: list[bytes] = []

    async def brief(msg: Message) -> None:
        entered.set()
        await asyncio.sleep(0.2)
        finished.append(msg.data)

    await fabric.subscribe("flush", brief)
    await fabric.publish("flush", b"in flight")
    async with asyncio.timeout(5):
        await entered.wait()
    await fabric.close()
    await fabric.close()  # safe twice
    assert finished == [b"in flight"]


# --- trace context and request id ------------------------------------------------------------


async def test_trace_context_and_request_id_travel_with_the_message(
    make_fabric: MakeFabric,
) -> None:
    request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("rid", default=None)
    fabric = await make_fabric(request_id=request_id.get)
    inbox = Inbox()
    await fabric.subscribe("traced", inbox)
    tracer = TracerProvider().get_tracer("fabric-test")

    with tracer.start_as_current_span("publish") as span:
        token = request_id.set("req-42")
        try:
            await fabric.publish("traced", b"with context")
        finally:
            request_id.reset(token)
    await fabric.publish("traced", b"caller's own id", headers={"x-request-id": "req-7"})
    await fabric.publish("traced", b"no context")

    with_ctx, callers, bare = await inbox.wait_for(3)
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert with_ctx.request_id == "req-42"
    assert with_ctx.traceparent is not None and trace_id in with_ctx.traceparent
    parent = get_current_span(with_ctx.trace_context()).get_span_context()
    assert parent.trace_id == span.get_span_context().trace_id
    assert parent.span_id == span.get_span_context().span_id
    assert callers.request_id == "req-7"
    assert bare.request_id is None and bare.traceparent is None


# --- bad input and lifecycle -----------------------------------------------------------------


@pytest.mark.parametrize("topic", ["", "a..b", "orders.*", "orders.>", "has space", ".lead"])
async def test_invalid_topics_are_refused(make_fabric: MakeFabric, topic: str) -> None:
    fabric = await make_fabric()
    with pytest.raises(InvalidArgument, match="invalid topic"):
        await fabric.publish(topic, b"x")
    with pytest.raises(InvalidArgument, match="invalid topic"):
        await fabric.subscribe(topic, Inbox())


async def test_bad_groups_headers_and_arguments_are_refused(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric()
    with pytest.raises(InvalidArgument, match="invalid group"):
        await fabric.subscribe("ok", Inbox(), group="two words")
    with pytest.raises(InvalidArgument, match="max_attempts"):
        await fabric.subscribe("ok", Inbox(), max_attempts=0)
    with pytest.raises(InvalidArgument, match="reserved"):
        await fabric.publish("ok", b"x", headers={"Nats-Expected-Stream": "other"})
    with pytest.raises(InvalidArgument, match="single-line"):
        await fabric.publish("ok", b"x", headers={"note": "two\r\nlines"})
    with pytest.raises(InvalidArgument, match="ttl"):
        await fabric.publish("ok", b"x", ttl=0)
    with pytest.raises(InvalidArgument, match="msg_id"):
        await fabric.publish("ok", b"x", msg_id="")


async def test_a_closed_fabric_refuses_work(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric()
    await fabric.close()
    with pytest.raises(FailedPrecondition, match="closed"):
        await fabric.publish("ok", b"x")
    with pytest.raises(FailedPrecondition, match="closed"):
        await fabric.subscribe("ok", Inbox())
    with pytest.raises(FailedPrecondition):
        await fabric.start()
