"""The lane's edges, end to end on real sockets: old versions, the method's own deadline, the
lane switched off at the gateway, a worker restarted on its old port, a lane in another format
or out of reach.

``test_lane_routing.py`` covers the main path (calls, errors, tracing, deadlines, module calls);
here calls are counted where they arrive, by wrapping the worker's lane endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import pytest

from runtime.client import InstancePool as ChannelPool
from runtime.client import ModuleClient
from runtime.deadline import Deadline
from runtime.gateway import Gateway
from runtime.lane import WHERE_METHOD
from runtime.worker import Worker
from tests.conftest import PROBE_MODULES_DIR
from tests.fixtures.gateway_modules.stack import GatewayClient, GatewayStack
from tests.fixtures.worker_modules.probe.handlers import SEEN
from tests.services import free_port

OK = grpc.StatusCode.OK
USERS_ROLES = ("users:read", "users:write")

Pairs = tuple[tuple[str, str | bytes], ...]


class CountedLane:
    """Wraps a worker's lane endpoint: counts the calls that arrive over the lane."""

    def __init__(self, worker: Worker) -> None:
        lane = worker._lane
        assert lane is not None, "the worker serves no lane"
        self.calls: list[str] = []
        self._inner: Any = lane._served
        lane._served = self

    async def unary(
        self, method_path: str, payload: bytes, metadata: Sequence[tuple[str, str | bytes]], deadline: Deadline | None
    ) -> tuple[bytes, Pairs]:
        self.calls.append(method_path)
        return await self._inner.unary(method_path, payload, metadata, deadline)


def lane_of(gateway: Gateway, worker: Worker) -> Any:
    """The lane client the gateway's pool holds for ``worker`` (None while it uses gRPC)."""
    services = gateway._services
    assert services is not None
    instance = services.client.pool._workers.get(worker.address)
    return None if instance is None else instance._lane


async def until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polls state no event announces
            await asyncio.sleep(0.02)


def email() -> str:
    return f"lane-{uuid.uuid4().hex[:12]}@example.com"


async def create_user(client: GatewayClient, token: str) -> str:
    reply = await client.call(
        "users", "CreateUser", {"given_name": "Ada", "family_name": "Lovelace", "email": email()}, token=token
    )
    assert reply.code == OK, reply.details
    assert reply.body is not None
    return str(reply.body["id"])


async def lane_in_use(gateway: Gateway, worker: Worker, client: GatewayClient, token: str) -> None:
    """Call until the gateway's pool has looked the worker's lane up (it does so in the background)."""

    async def ready() -> bool:
        await client.call("users", "GetUser", {"id": "warm-up"}, token=token)
        return lane_of(gateway, worker) is not None

    await until(ready)


async def test_an_old_version_is_transformed_at_the_gateway_and_served_over_the_lane(gw_stack: GatewayStack) -> None:
    worker = await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    client = gw_stack.client(gateway)
    token = gw_stack.token(*USERS_ROLES)
    await lane_in_use(gateway, worker, client, token)
    counted = CountedLane(worker)

    created = await client.call(
        "users", "CreateUser", {"name": "Grace Hopper", "email": email()}, version="2025-01-15", token=token
    )
    assert created.code == OK and created.body is not None
    assert created.body["name"] == "Grace Hopper"
    assert counted.calls == ["/users.v1.UsersService/CreateUser"]


async def test_the_methods_own_deadline_over_the_lane_ends_the_call_and_cancels_the_handler(gw_stack: GatewayStack) -> None:
    worker = await gw_stack.worker("probe", tree=PROBE_MODULES_DIR)
    gateway = await gw_stack.gateway(ready=["probe"])
    client = gw_stack.client(gateway)

    token = gw_stack.token()

    async def ready() -> bool:
        reply = await client.call("probe", "Echo", {"text": "warm"}, token=token)
        assert reply.code == OK, reply.details
        return lane_of(gateway, worker) is not None

    await until(ready)
    counted = CountedLane(worker)
    request_id = f"stall-{uuid.uuid4().hex[:8]}"

    # Stall's policy timeout is 0.3 s; the handler would sleep 5.
    stalled = await client.call(
        "probe", "Stall", {"seconds": 5.0}, token=token, metadata=[("x-request-id", request_id)]
    )

    assert counted.calls == ["/probe.v1.ProbeService/Stall"]
    assert stalled.code == grpc.StatusCode.DEADLINE_EXCEEDED, stalled.details

    async def cancelled() -> bool:
        return request_id in SEEN["cancelled"]

    await until(cancelled, within=5.0)


async def test_a_gateway_with_the_lane_off_calls_over_grpc(gw_stack: GatewayStack) -> None:
    worker = await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"], lane=False)
    client = gw_stack.client(gateway)
    token = gw_stack.token(*USERS_ROLES)
    counted = CountedLane(worker)

    user_id = await create_user(client, token)
    for _ in range(5):
        assert (await client.call("users", "GetUser", {"id": user_id}, token=token)).code == OK
        await asyncio.sleep(0.02)

    assert counted.calls == []
    assert worker._lane is not None and worker._lane.connections == 0


@pytest.fixture(autouse=True)
def _forget_probe_calls() -> None:
    SEEN["cancelled"].clear()


Raw = Callable[[bytes, Any], Awaitable[bytes]]


@contextlib.asynccontextmanager
async def fake_worker(where_answer: bytes, method: str, serve: Raw) -> AsyncIterator[tuple[str, list[str]]]:
    """A raw grpc.aio server answering :data:`WHERE_METHOD` with ``where_answer`` and ``method``
    with ``serve``; yields its address and the paths called on it, in order."""
    called: list[str] = []

    async def where(request: bytes, context: Any) -> bytes:
        called.append(WHERE_METHOD)
        return where_answer

    async def served(request: bytes, context: Any) -> bytes:
        called.append(method)
        return await serve(request, context)

    handlers = {
        WHERE_METHOD: grpc.unary_unary_rpc_method_handler(where),
        method: grpc.unary_unary_rpc_method_handler(served),
    }

    class Handlers(grpc.GenericRpcHandler):  # type: ignore[type-arg]
        def service(self, details: grpc.HandlerCallDetails) -> Any:
            return handlers.get(details.method)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", called
    finally:
        await server.stop(0)


async def echo_back(request: bytes, context: Any) -> bytes:
    return b"echo:" + request


async def test_a_worker_speaking_another_lane_format_is_called_over_grpc() -> None:
    """Mid-upgrade, a worker may name a lane format this gateway does not speak: gRPC it is."""
    async with fake_worker(b"modrpc-lane/99 127.0.0.1:1", "/t.S/Echo", echo_back) as (address, called):
        async with ModuleClient(ChannelPool(lanes=True)) as client:
            client.pool.update("t", [address])
            for n in range(5):
                body, _ = await client.call("t", "/t.S/Echo", b"%d" % n)
                assert body == b"echo:%d" % n
                assert client.pool._workers[address]._lane is None
                await asyncio.sleep(0.02)
    assert called.count(WHERE_METHOD) == 1, "asked once, then kept to gRPC"
    assert called.count("/t.S/Echo") == 5


async def test_a_lane_that_cannot_be_reached_costs_no_call_and_is_asked_for_less_and_less() -> None:
    """A worker behind a port mapping names a lane port this host cannot reach.

    The connect fails before anything is sent, so each such call goes over gRPC at once, even
    one that is not idempotent; and the pool asks the worker for its lane again later and later.
    """
    unreachable = f"modrpc-lane/2 127.0.0.1:{free_port()}".encode()  # nothing listens there
    async with fake_worker(unreachable, "/t.S/Create", echo_back) as (address, called):
        async with ModuleClient(ChannelPool(lanes=True)) as client:
            client.pool.update("t", [address])
            for n in range(12):
                body, _ = await client.call("t", "/t.S/Create", b"%d" % n, idempotent=False)
                assert body == b"echo:%d" % n
                await asyncio.sleep(0.02)
    assert called.count("/t.S/Create") == 12, "every call served once, none lost or doubled"
    # Asked on the first call, again at once after the first miss, then not for 5 s.
    assert called.count(WHERE_METHOD) == 2, called


async def test_a_worker_restarted_on_the_same_port_is_reached_over_its_new_lane(
    gw_stack: GatewayStack, gw_settings: Callable[..., Any]
) -> None:
    """Its gRPC address is the same, its lane port is not: the gateway looks the lane up again."""
    port = free_port()
    first = Worker("users", gw_settings(), host="127.0.0.1", port=port)
    await first.start()
    second: Worker | None = None
    try:
        gateway = await gw_stack.gateway(ready=["users"])
        client = gw_stack.client(gateway)
        token = gw_stack.token(*USERS_ROLES)
        await lane_in_use(gateway, first, client, token)
        user_id = await create_user(client, token)
        old_lane = first.lane_address
        await first.stop(0.5)

        second = Worker("users", gw_settings(), host="127.0.0.1", port=port)
        await second.start()
        assert second.address == first.address and second.lane_address != old_lane
        counted = CountedLane(second)

        async def served_over_the_new_lane() -> bool:
            # The old lane's port refuses: the call goes over gRPC, and the lane is asked for again.
            reply = await client.call("users", "GetUser", {"id": user_id}, token=token)
            if reply.code == grpc.StatusCode.UNAVAILABLE and "no healthy worker" in (reply.details or ""):
                return False  # the gateway saw the first worker leave and not yet the second arrive
            assert reply.code == OK, reply.details
            return bool(counted.calls)

        await until(served_over_the_new_lane)
    finally:
        await first.stop(0)
        if second is not None:
            await second.stop(0.5)
