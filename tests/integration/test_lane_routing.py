"""Which way a call takes from the gateway to a worker, and that the lane changes nothing else.

Real sockets throughout: workers serve gRPC and their lane on port 0, the gateway (and the
orders worker, for its calls through ``gctx``) finds them through the test's SQLite store, and
its pool looks each worker's lane up in the background on the first call.

How a test knows a call went over the lane, without wrapping anything: every request sent on a
lane connection takes the next stream id (:func:`lane_streams`), and the worker's
:class:`~runtime.lane.LaneServer` counts the connections it holds. A call that went over gRPC
moves neither.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runtime.client import InstancePool as ChannelPool
from runtime.gateway import Gateway
from runtime.lane import LaneClient
from runtime.observability import HANDLER_ATTRIBUTE, REQUEST_ID_ATTRIBUTE, VERSION_ATTRIBUTE
from runtime.worker import Worker
from tests.conftest import PROBE_MODULES_DIR
from tests.fixtures.gateway_modules.stack import GatewayClient, GatewayStack, Reply
from tests.fixtures.worker_modules.probe.handlers import SEEN

OK = grpc.StatusCode.OK
USER_ROLES = ("users:read", "users:write")
WAIT = 10.0
"""The bound on every wait for something that happens in the background."""


# -- observing the route -------------------------------------------------------------------------


def gateway_pool(gateway: Gateway) -> ChannelPool:
    services = gateway._services
    assert services is not None, "the gateway has not started"
    return services.client.pool


def worker_pool(worker: Worker) -> ChannelPool:
    """The pool a worker's module calls (``gctx.modules``) go through."""
    assert worker.service is not None, "the worker has not started"
    pool: ChannelPool = worker.service.deps.client.pool
    return pool


def lane_to(pool: ChannelPool, worker: Worker) -> LaneClient | None:
    """The lane client ``pool`` uses for ``worker``; None while its calls go over gRPC."""
    instance = pool._workers.get(worker.address)
    return None if instance is None else instance._lane


def lane_streams(lane: LaneClient) -> int:
    """How many requests ``lane`` has sent on its current connection (stream ids count up)."""
    connection = lane._connection
    return 0 if connection is None else connection._last_id


def lane_connections(worker: Worker) -> int:
    assert worker._lane is not None, "the worker serves no lane"
    return worker._lane.connections


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = WAIT) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while not await check():  # noqa: ASYNC110 - polls state no event announces
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {what}") from None


async def lane_ready(
    pool: ChannelPool, worker: Worker, call: Callable[[], Awaitable[Reply]]
) -> LaneClient:
    """Make calls (each must succeed) until ``pool`` has looked up ``worker``'s lane."""
    found: list[LaneClient] = []

    async def ready() -> bool:
        reply = await call()
        assert reply.code == OK, reply.details
        lane = lane_to(pool, worker)
        if lane is not None:
            found.append(lane)
        return lane is not None

    await until(ready, f"a lane to {worker.module} at {worker.address}")
    return found[0]


# -- calls ---------------------------------------------------------------------------------------


def request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def create_user(client: GatewayClient, token: str) -> str:
    reply = await client.call(
        "users",
        "CreateUser",
        {
            "given_name": "Ada",
            "family_name": "Lovelace",
            "email": f"{request_id('route')}@example.com",
        },
        token=token,
    )
    assert reply.code == OK, reply.details
    assert reply.body is not None
    return str(reply.body["id"])


def get_user(client: GatewayClient, token: str, user_id: str, **kwargs: Any) -> Awaitable[Reply]:
    return client.call("users", "GetUser", {"id": user_id}, token=token, **kwargs)


# -- tests ---------------------------------------------------------------------------------------


async def test_calls_through_the_gateway_reach_the_worker_over_its_lane(
    gw_stack: GatewayStack,
) -> None:
    worker = await gw_stack.worker("users")
    assert worker.lane_address and worker.lane_address != worker.address
    gateway = await gw_stack.gateway(ready=["users"])
    client, token = gw_stack.client(gateway), gw_stack.token(*USER_ROLES)
    user_id = await create_user(client, token)  # the first call: over gRPC, the lookup starts
    lane = await lane_ready(gateway_pool(gateway), worker, lambda: get_user(client, token, user_id))
    assert lane.address.rpartition(":")[2] == worker.lane_address.rpartition(":")[2]
    sent = lane_streams(lane)

    replies = await asyncio.gather(*(get_user(client, token, user_id) for _ in range(10)))

    assert all(r.code == OK and r.body is not None and r.body["id"] == user_id for r in replies)
    assert lane_streams(lane) - sent == 10, "every call was sent over the lane"
    assert lane_connections(worker) == 1, "one connection, multiplexed"


async def test_a_worker_without_a_lane_is_called_over_grpc_and_never_asked_again(
    gw_stack: GatewayStack,
) -> None:
    worker = await gw_stack.worker("users", lane=False)
    assert worker.lane_address == ""
    gateway = await gw_stack.gateway(ready=["users"])
    client, token = gw_stack.client(gateway), gw_stack.token(*USER_ROLES)
    pool = gateway_pool(gateway)

    user_id = await create_user(client, token)  # starts the lookup, which meets UNIMPLEMENTED
    instance = pool._workers[worker.address]

    async def gave_up() -> bool:
        return not instance._lanes and instance._lane_lookup is None

    await until(gave_up, "the pool to learn the worker serves no lane")
    for _ in range(5):
        reply = await get_user(client, token, user_id)
        assert reply.code == OK and reply.body is not None and reply.body["id"] == user_id
        assert instance._lane is None
        assert instance._lane_lookup is None, "the pool asked the worker for a lane again"


async def test_a_failure_over_the_lane_ends_as_it_does_over_grpc(gw_stack: GatewayStack) -> None:
    """The same invalid call, through a gateway using the lane and one using gRPC."""
    worker = await gw_stack.worker("users")
    over_lane = await gw_stack.gateway(ready=["users"])
    over_grpc = await gw_stack.gateway(ready=["users"], lane=False)
    token = gw_stack.token(*USER_ROLES)
    lane_client, grpc_client = gw_stack.client(over_lane), gw_stack.client(over_grpc)
    user_id = await create_user(lane_client, token)
    lane = await lane_ready(
        gateway_pool(over_lane), worker, lambda: get_user(lane_client, token, user_id)
    )
    sent = lane_streams(lane)
    invalid = {"given_name": "A", "family_name": "B", "email": "not-an-address"}

    async def refused(client: GatewayClient, rid: str) -> tuple[Reply, list[str]]:
        reply = await client.call(
            "users", "CreateUser", invalid, token=token, metadata=[("x-request-id", rid)]
        )
        assert reply.code == grpc.StatusCode.INVALID_ARGUMENT, (reply.code, reply.details)
        assert reply.request_id == rid, "x-request-id is in the trailing metadata"
        assert reply.status is not None, "google.rpc.Status details came back"
        bad = error_details_pb2.BadRequest()
        assert reply.status.details[0].Unpack(bad)
        return reply, [v.field for v in bad.field_violations]

    by_lane, lane_fields = await refused(lane_client, request_id("bad-lane"))
    assert lane_streams(lane) - sent == 1, "the call was sent over the lane"
    by_grpc, grpc_fields = await refused(grpc_client, request_id("bad-grpc"))

    assert lane_fields == grpc_fields == ["email"]
    assert by_lane.details == by_grpc.details
    assert by_lane.status is not None and by_grpc.status is not None
    assert by_lane.status.code == by_grpc.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert by_lane.status.message == by_grpc.status.message


def finished_spans(exporter: InMemorySpanExporter, rid: str) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.attributes and s.attributes.get(REQUEST_ID_ATTRIBUTE) == rid
    ]


async def test_the_worker_span_of_a_lane_call_continues_the_gateway_trace(
    span_exporter: InMemorySpanExporter, gw_stack: GatewayStack
) -> None:
    worker = await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    client, token = gw_stack.client(gateway), gw_stack.token(*USER_ROLES)
    user_id = await create_user(client, token)
    lane = await lane_ready(gateway_pool(gateway), worker, lambda: get_user(client, token, user_id))
    sent = lane_streams(lane)
    rid = request_id("trace")

    reply = await get_user(client, token, user_id, metadata=[("x-request-id", rid)])

    assert reply.code == OK, reply.details
    assert lane_streams(lane) - sent == 1, "the traced call went over the lane"

    def server_and_client() -> tuple[list[ReadableSpan], list[ReadableSpan]]:
        spans = finished_spans(span_exporter, rid)
        kinds = (trace.SpanKind.SERVER, trace.SpanKind.CLIENT)
        return tuple([s for s in spans if s.kind == kind] for kind in kinds)  # type: ignore[return-value]

    async def all_ended() -> bool:  # the worker's span ends just after its answer leaves
        servers, clients = server_and_client()
        return len(servers) == 2 and len(clients) == 1

    await until(
        all_ended, "the gateway's and the worker's server spans and the gateway's client span"
    )
    servers, (client_span,) = server_and_client()
    assert client_span.context is not None and client_span.parent is not None
    (worker_span,) = [
        s
        for s in servers
        if s.parent is not None and s.parent.span_id == client_span.context.span_id
    ]
    (gateway_span,) = [s for s in servers if s is not worker_span]
    assert gateway_span.context is not None
    assert client_span.parent.span_id == gateway_span.context.span_id
    assert worker_span.context is not None
    assert (
        worker_span.context.trace_id
        == client_span.context.trace_id
        == gateway_span.context.trace_id
    )
    attributes = dict(worker_span.attributes or {})
    assert attributes[REQUEST_ID_ATTRIBUTE] == rid
    assert attributes[HANDLER_ATTRIBUTE] == "users.GetUser"
    assert attributes[VERSION_ATTRIBUTE], "the worker's span names the version it served"


async def test_a_deadline_over_the_lane_ends_the_call_and_the_handler(
    gw_stack: GatewayStack,
) -> None:
    worker = await gw_stack.worker("probe", tree=PROBE_MODULES_DIR)
    gateway = await gw_stack.gateway(ready=["probe"])
    client, token = gw_stack.client(gateway), gw_stack.token()
    lane = await lane_ready(
        gateway_pool(gateway),
        worker,
        lambda: client.call("probe", "Echo", {"text": "warm"}, token=token),
    )
    sent = lane_streams(lane)
    rid = request_id("stall")

    # The handler would sleep 5 s; the caller allows 0.2 s (Stall's own limit is 0.3 s).
    stalled = await client.call(
        "probe",
        "Stall",
        {"seconds": 5.0},
        token=token,
        metadata=[("x-request-id", rid)],
        timeout=0.2,
    )

    assert stalled.code == grpc.StatusCode.DEADLINE_EXCEEDED, (stalled.code, stalled.details)
    assert lane_streams(lane) - sent == 1, "the call was sent over the lane"

    async def ended() -> bool:
        return rid in SEEN["cancelled"] and rid in SEEN["cleaned"]

    await until(ended, "the handler to be cancelled and its cleanup to run", within=5.0)

    async def audited() -> bool:
        records = await worker.store.read("audit", limit=100_000)
        outcomes = [r["outcome"] for _, r in records if r["request_id"] == rid]
        if outcomes:
            # The worker's own deadline and the gateway's CANCEL race to end the handler.
            assert outcomes in (["DEADLINE_EXCEEDED"], ["CANCELLED"]), outcomes
        return bool(outcomes)

    await until(audited, f"the audit record of {rid}", within=5.0)
    echoed = await client.call("probe", "Echo", {"text": "still here"}, token=token)
    assert echoed.code == OK and echoed.body is not None and echoed.body["text"] == "still here"


async def test_a_worker_replaced_by_one_on_a_new_port_is_reached_over_the_new_lane(
    gw_stack: GatewayStack,
) -> None:
    first = await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    client, token = gw_stack.client(gateway), gw_stack.token(*USER_ROLES)
    pool = gateway_pool(gateway)
    user_id = await create_user(client, token)
    await lane_ready(pool, first, lambda: get_user(client, token, user_id))

    await first.stop(0.5)  # deregisters: the gateway drops it at its next refresh
    second = await gw_stack.worker("users")
    assert second.address != first.address

    async def served_by_second() -> bool:
        # Until the gateway's routes know the new worker, calls meet the old one's closed ports.
        reply = await get_user(client, token, user_id)
        assert reply.code in (OK, grpc.StatusCode.UNAVAILABLE), (reply.code, reply.details)
        return reply.code == OK and lane_to(pool, second) is not None

    await until(served_by_second, "the gateway to route to the new worker over its lane")
    lane = lane_to(pool, second)
    assert lane is not None
    sent = lane_streams(lane)
    for _ in range(3):
        reply = await get_user(client, token, user_id)
        assert reply.code == OK and reply.body is not None and reply.body["id"] == user_id
    assert lane_streams(lane) - sent == 3
    assert lane_connections(second) == 1
    # The pool keys instances by module and version: the old worker is in none of them.
    assert {a for key in pool.keys() for a in pool.addresses(key)} == {second.address}


async def test_module_calls_through_gctx_take_the_lane(gw_stack: GatewayStack) -> None:
    """``orders.PlaceOrder`` reads the user and reserves stock through ``gctx.modules``."""
    users = await gw_stack.worker("users")
    inventory = await gw_stack.worker("inventory")
    orders = await gw_stack.worker("orders")
    gateway = await gw_stack.gateway(ready=["users", "inventory", "orders"])
    client = gw_stack.client(gateway)
    token = gw_stack.token(*USER_ROLES, "orders:read", "orders:write")
    user_id = await create_user(client, token)
    pool = worker_pool(orders)

    def place() -> Awaitable[Reply]:
        items = [{"sku": "WIDGET-1", "quantity": 1}]
        return client.call(
            "orders", "PlaceOrder", {"user_id": user_id, "items": items}, token=token
        )

    async def both_lanes() -> bool:
        reply = await place()
        assert reply.code == OK, reply.details
        return lane_to(pool, users) is not None and lane_to(pool, inventory) is not None

    await until(both_lanes, "the orders worker to find the lanes of users and inventory")
    users_lane, inventory_lane = lane_to(pool, users), lane_to(pool, inventory)
    assert users_lane is not None and inventory_lane is not None
    before = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, token=token)
    assert before.code == OK and before.body is not None
    sent_users, sent_inventory = lane_streams(users_lane), lane_streams(inventory_lane)

    order = await place()

    assert order.code == OK and order.body is not None, order.details
    assert order.body["user_id"] == user_id and len(order.body["reservation_ids"]) == 1
    assert lane_streams(users_lane) - sent_users == 1, "GetUser went over the users lane"
    assert lane_streams(inventory_lane) - sent_inventory == 1, (
        "Reserve went over the inventory lane"
    )
    after = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, token=token)
    assert after.code == OK and after.body is not None
    # Other tests in the session order too, but none runs concurrently with this one.
    assert after.body["available"] == before.body["available"] - 1
