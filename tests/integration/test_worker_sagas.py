"""Compensations for real: orders, users and inventory workers calling each other over sockets.

Three in-process workers share one SQLite manifest store, so the orders worker finds the users
and inventory workers through the store, as it would across hosts. ``orders.PlaceOrder`` reads
the user and reserves stock item by item through ``gctx``, registering a release for every
reservation; when a later item cannot be reserved, the releases run and the stock is back.

Stock lives in the session's one inventory database, and other tests order too, so every check
compares against the level read just before, never against the demo catalogue's numbers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest

from gen.inventory.v2025_01_15 import inventory_pb2
from gen.inventory.v2025_01_15.client import InventoryClient
from gen.orders.v2025_01_15 import orders_pb2
from gen.orders.v2025_01_15.client import OrdersClient
from gen.users.v2025_06_01 import users_pb2
from gen.users.v2025_06_01.client import UsersClient
from runtime.config import Settings
from runtime.lcc import LogSnapshotStore
from runtime.worker import Worker
from tests.conftest import Dial, StartWorker


@dataclass
class Shop:
    users: UsersClient
    inventory: InventoryClient
    orders: OrdersClient
    store: Any
    """The manifest store all three workers share (audit records and snapshots land here)."""

    async def stock(self, sku: str) -> int:
        reply = await self.inventory.get_stock(inventory_pb2.GetStockRequest(sku=sku), timeout=5)
        return reply.available

    async def new_user(self) -> str:
        user = await self.users.create_user(
            users_pb2.CreateUserRequest(
                given_name="Grace",
                family_name="Hopper",
                email=f"g-{uuid.uuid4().hex[:12]}@example.com",
            ),
            timeout=5,
        )
        return user.id


@pytest.fixture
async def shop(
    start_worker: StartWorker, worker_settings: Callable[..., Settings],
    dial: Dial,
) -> AsyncIterator[Shop]:
    settings = worker_settings()
    users = await start_worker("users", settings=settings)
    inventory = await start_worker("inventory", settings=settings)
    orders: Worker = await start_worker("orders", settings=settings)
    async with (
        dial(users) as u,
        dial(inventory) as i,
        dial(orders) as o,
    ):
        yield Shop(UsersClient(u), InventoryClient(i), OrdersClient(o), orders.store)


async def audit_of(
    store: Any, request_id: str, count: int, within: float = 5.0
) -> list[dict[str, Any]]:
    """The audit records of ``request_id`` once ``count`` of them are written (asynchronously)."""
    give_up = time.monotonic() + within
    while True:
        records = [
            r for _, r in await store.read("audit", limit=100_000) if r["request_id"] == request_id
        ]
        if len(records) >= count or time.monotonic() > give_up:
            return records
        await asyncio.sleep(0.05)


def order_request(user_id: str, *items: tuple[str, int]) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(
        user_id=user_id, items=[orders_pb2.OrderItem(sku=s, quantity=q) for s, q in items]
    )


async def test_a_failed_order_releases_what_it_reserved(shop: Shop) -> None:
    user_id = await shop.new_user()
    widgets, gizmos = await shop.stock("WIDGET-1"), await shop.stock("GIZMO-42")
    request_id = f"saga-{uuid.uuid4().hex}"

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await shop.orders.place_order(
            order_request(user_id, ("WIDGET-1", 2), ("GIZMO-42", gizmos + 1)),
            metadata=[("x-request-id", request_id)],
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"not enough stock of GIZMO-42: {gizmos + 1} asked, {gizmos} available" in (
        info.value.details() or ""
    )
    assert await shop.stock("WIDGET-1") == widgets
    assert await shop.stock("GIZMO-42") == gizmos

    # The widgets were really reserved and then released: every worker's audit record of this
    # request (the id travels with module calls) shows the saga step by step.
    records = await audit_of(shop.store, request_id, count=5)
    outcomes = sorted((r["method"].rsplit("/", 1)[-1], r["outcome"]) for r in records)
    assert outcomes == [
        ("GetUser", "ok"),
        ("PlaceOrder", "FAILED_PRECONDITION"),
        ("Release", "ok"),
        ("Reserve", "FAILED_PRECONDITION"),
        ("Reserve", "ok"),
    ]
    (placed,) = [r for r in records if r["method"].endswith("/PlaceOrder")]
    kinds = [e["kind"] for e in placed["events"]]
    assert kinds.count("compensation") == 1 and "compensation_error" not in kinds
    assert kinds.index("handler_error") < kinds.index("compensation") < kinds.index("lifecycle_end")


async def test_a_placed_order_reduces_stock_and_can_be_read_back(shop: Shop) -> None:
    user_id = await shop.new_user()
    widgets, gadgets = await shop.stock("WIDGET-1"), await shop.stock("GADGET-7")

    order = await shop.orders.place_order(
        order_request(user_id, ("WIDGET-1", 3), ("GADGET-7", 1)), timeout=10
    )
    assert order.user_id == user_id and order.email.endswith("@example.com")
    assert order.status == orders_pb2.ORDER_STATUS_PLACED
    assert len(set(order.reservation_ids)) == 2
    assert await shop.stock("WIDGET-1") == widgets - 3
    assert await shop.stock("GADGET-7") == gadgets - 1

    again = await shop.orders.get_order(orders_pb2.GetOrderRequest(id=order.id), timeout=5)
    assert again.id == order.id and list(again.reservation_ids) == list(order.reservation_ids)


async def test_an_order_for_an_unknown_user_reserves_nothing(shop: Shop) -> None:
    widgets = await shop.stock("WIDGET-1")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await shop.orders.place_order(order_request("no-such-user", ("WIDGET-1", 1)), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # the users worker's status, relayed
    assert "no-such-user" in (info.value.details() or "")
    assert await shop.stock("WIDGET-1") == widgets


async def test_place_order_stores_a_snapshot_of_every_call(shop: Shop) -> None:
    """Property 44 for a method whose policy says ``snapshot = true``; the failing saga's
    snapshot holds the request, the version and the lifecycle up to its compensation."""
    user_id = await shop.new_user()
    snapshots = LogSnapshotStore(shop.store)
    before = set(await snapshots.list("orders.PlaceOrder"))
    request_id = f"snap-{uuid.uuid4().hex}"
    with pytest.raises(grpc.aio.AioRpcError):
        await shop.orders.place_order(
            order_request(user_id, ("WIDGET-1", 1), ("GIZMO-42", 10_000)),
            metadata=[("x-request-id", request_id)],
            timeout=10,
        )
    (new,) = set(await snapshots.list("orders.PlaceOrder")) - before
    snapshot = await snapshots.load(new)
    assert snapshot.request_id == request_id
    assert snapshot.handler == "orders.PlaceOrder"
    assert snapshot.version == "2025-01-15"
    assert snapshot.request["user_id"] == user_id
    assert [(i["sku"], i["quantity"]) for i in snapshot.request["items"]] == [
        ("WIDGET-1", 1),
        ("GIZMO-42", 10_000),
    ]
    kinds = [e.kind for e in snapshot.events]
    assert (
        kinds[0] == "lifecycle_start" and "compensation" in kinds and kinds[-1] == "lifecycle_end"
    )
