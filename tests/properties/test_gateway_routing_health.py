"""Route-manager properties through a real gateway: healthy instances only (7), served from its
cache (36).

Each test starts its workers and one gateway once and shares them between its examples (hence
the suppressed function-scoped-fixture health check). Every example is real gRPC calls over
loopback, plus, for Property 7, store writes and a route refresh.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import Unavailable
from runtime.gateway import Gateway
from runtime.worker import Worker
from tests.fixtures.gateway_modules.stack import GatewayClient, GatewayStack

SHARED = [HealthCheck.function_scoped_fixture]
"""One gateway per test, shared by its examples (see the module docstring)."""

GET_USER = "/users.v1.UsersService/GetUser"


def served_calls(worker: Worker) -> int:
    """GetUser calls this worker has handled, from its own ``/metrics``."""
    with urllib.request.urlopen(f"http://{worker.metrics_address}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = re.compile(
        r'^modrpc_requests_total\{[^}]*method="' + re.escape(GET_USER) + r'"[^}]*\} ([0-9.e+]+)$',
        re.M,
    )
    return int(sum(float(m) for m in pattern.findall(text)))


async def traffic(workers: list[Worker]) -> list[int]:
    return await asyncio.gather(*(asyncio.to_thread(served_calls, w) for w in workers))


# -- Property 7 ------------------------------------------------------------------------------------


@dataclass
class Fleet:
    stack: GatewayStack
    gateway: Gateway
    client: GatewayClient
    workers: list[Worker]
    token: str


@pytest.fixture
async def fleet(gw_stack: GatewayStack) -> Fleet:
    """Three users workers and a gateway that routes to all three."""
    workers = [await gw_stack.worker("users") for _ in range(3)]
    gateway = await gw_stack.gateway(ready=["users"])
    return Fleet(gw_stack, gateway, gw_stack.client(gateway), workers, gw_stack.token("users:read"))


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED)
@given(
    health=st.lists(st.booleans(), min_size=3, max_size=3).filter(any),
    calls=st.integers(min_value=1, max_value=8),
)
async def test_an_unhealthy_instance_gets_no_new_traffic_while_a_healthy_one_exists(
    fleet: Fleet, health: list[bool], calls: int
) -> None:
    """Property 7: An unhealthy instance gets no new traffic while a healthy one exists.

    Three users workers; the example marks some of them unhealthy in the manifest store (at
    least one stays healthy) and the gateway rebuilds its routes. Every following call is
    answered, and only by healthy workers, as each worker's own request counter shows.
    """
    store = fleet.workers[0].store
    for worker, healthy in zip(fleet.workers, health, strict=True):
        await store.set_worker_health(worker.worker_id, healthy)
    await fleet.gateway.refresh()

    before = await traffic(fleet.workers)
    replies = await asyncio.gather(
        *(
            fleet.client.call("users", "GetUser", {"id": f"p7-{i}"}, token=fleet.token)
            for i in range(calls)
        )
    )
    assert all(r.code == grpc.StatusCode.NOT_FOUND for r in replies), [r.details for r in replies]
    after = await traffic(fleet.workers)

    handled = [b - a for a, b in zip(before, after, strict=True)]
    assert sum(handled) == calls
    for count, healthy in zip(handled, health, strict=True):
        if not healthy:
            assert count == 0, (
                f"an unhealthy worker took {count} calls: {handled} for health {health}"
            )


async def test_a_stopped_instance_gets_no_traffic_and_the_others_take_it(fleet: Fleet) -> None:
    """A worker that stops deregisters; after the gateway's refresh every call reaches the others."""
    stopped = fleet.workers[1]
    await stopped.stop(0.5)
    await fleet.gateway.refresh()
    running = [fleet.workers[0], fleet.workers[2]]
    before = await traffic(running)
    replies = [
        await fleet.client.call("users", "GetUser", {"id": "gone"}, token=fleet.token)
        for _ in range(6)
    ]
    assert all(r.code == grpc.StatusCode.NOT_FOUND for r in replies)
    after = await traffic(running)
    assert sum(after) - sum(before) == 6
    assert all(b > a for a, b in zip(before, after, strict=True)), "round robin spreads over both"


# -- Property 36 -----------------------------------------------------------------------------------


class UnreachableStore:
    """The gateway's store once its database is gone: every call fails and is recorded.

    Each record names the asyncio task that asked, which tells the gateway's own background
    refresh (allowed to read the store, and to fail) from the calls it serves (never allowed).
    """

    BACKGROUND = ("modrpc-gateway-watch", "modrpc-gateway-refresh")

    def __init__(self, real: Any) -> None:
        self._real = real
        self.calls: list[tuple[str, str]] = []

    async def close(self) -> None:
        await self._real.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not a store method: introspection by tools
            raise AttributeError(name)

        def refuse(*args: Any, **kwargs: Any) -> Any:
            task = asyncio.current_task()
            self.calls.append((name, task.get_name() if task is not None else "<no task>"))
            raise Unavailable(f"the manifest store cannot be reached ({name})")

        return refuse

    def from_calls(self) -> list[tuple[str, str]]:
        """Store calls made by anything but the gateway's background refresh."""
        return [(name, task) for name, task in self.calls if task not in self.BACKGROUND]


@dataclass
class Cut:
    stack: GatewayStack
    client: GatewayClient
    store: UnreachableStore


@pytest.fixture
async def cut_off(gw_stack: GatewayStack) -> AsyncIterator[Cut]:
    """A users worker and a gateway whose store becomes unreachable once its routes are built."""
    await gw_stack.worker("users")
    # Every example's health checks come from one address, faster than a health checker's:
    # their rate limit is not what this property is about.
    gateway = await gw_stack.gateway(ready=["users"], limits={"unrouted_rate_limit": "100000/second"})
    store = UnreachableStore(gateway.store)
    gateway.store = store
    yield Cut(gw_stack, gw_stack.client(gateway), store)


calls_36 = st.lists(
    st.tuples(
        st.sampled_from(["GetUser", "CreateUser", "Health"]),
        st.sampled_from([None, "stable", "2025-01-15", "2025-03-01"]),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED)
@given(calls=calls_36)
async def test_the_route_manager_serves_from_its_cache(
    cut_off: Cut, calls: list[tuple[str, str | None]]
) -> None:
    """Property 36: The route manager serves from its cache.

    Once the routes are built the gateway's store goes away (every read fails). Calls at any
    version, old ones through transformers included, are still authenticated, resolved, routed
    and answered, and health still reports SERVING: manifests, GTypes, versions and health all
    come from the cache. The store sees no read from any call; only the background refresh
    tries it (and keeps the previous routes).
    """
    client = cut_off.client
    # A caller of its own per example: CreateUser's rate limit (100/second) is per caller.
    token = cut_off.stack.token("users:read", "users:write", subject=f"p36-{uuid.uuid4().hex[:8]}")
    health = health_pb2_grpc.HealthStub(client.channel)

    async def one(kind: str, version: str | None) -> None:
        if kind == "Health":
            answer = await health.Check(
                health_pb2.HealthCheckRequest(service="users.v1.UsersService"), timeout=5
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            return
        if kind == "GetUser":
            reply = await client.call(
                "users", "GetUser", {"id": "p36"}, version=version, token=token
            )
            assert reply.code == grpc.StatusCode.NOT_FOUND, reply.details
            return
        email = f"p36-{uuid.uuid4().hex[:12]}@example.com"
        old = client.shape_of("users", version) == "2025-01-15"
        fields = (
            {"name": "Ada Lovelace", "email": email}
            if old
            else {"given_name": "Ada", "family_name": "Lovelace", "email": email}
        )
        reply = await client.call("users", "CreateUser", fields, version=version, token=token)
        assert reply.ok and reply.body is not None, reply.details
        assert reply.body["email"] == email

    await asyncio.gather(*(one(kind, version) for kind, version in calls))
    assert cut_off.store.from_calls() == []
