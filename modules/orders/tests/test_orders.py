"""The orders module with users and inventory stubbed: the saga and its compensations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from modules.inventory.models import Release, Reservation, Reserve
from modules.users.models import GetUser
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from runtime.testing import ManualClock, ModuleHarness

NOW = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)


def user(req: GetUser) -> dict[str, Any]:
    if req.id != "u1":
        raise NotFound(f"no user with id {req.id!r}")
    return {"id": "u1", "given_name": "Ada", "family_name": "L", "email": "ada@example.com", "created_at": NOW}


class Stock:
    """A stand-in inventory: reservations succeed until ``fail_on`` (a SKU) comes up."""

    def __init__(self, fail_on: str = "") -> None:
        self.fail_on = fail_on
        self.released: list[str] = []

    async def reserve(self, req: Reserve) -> Reservation:
        if req.sku == self.fail_on:
            raise FailedPrecondition(f"not enough stock of {req.sku}")
        return Reservation(reservation_id=f"r-{req.sku}", sku=req.sku, quantity=req.quantity, remaining=1)

    async def release(self, req: Release) -> dict[str, Any]:
        self.released.append(req.reservation_id)
        return {"reservation_id": req.reservation_id, "released": True}


@pytest.fixture
def make_orders(module_harness: Callable[..., ModuleHarness]) -> Callable[[Stock], ModuleHarness]:
    def make(stock: Stock) -> ModuleHarness:
        return module_harness(
            "orders",
            clock=ManualClock(NOW),
            modules={
                "users": {"get_user": user},
                "inventory": {"reserve": stock.reserve, "release": stock.release},
            },
        )

    return make


ITEMS = [{"sku": "WIDGET-1", "quantity": 2}, {"sku": "GADGET-7", "quantity": 1}]


async def test_an_order_reads_the_user_and_reserves_every_item(make_orders: Callable[[Stock], ModuleHarness]) -> None:
    stock = Stock()
    orders = make_orders(stock)
    order = await orders.call("PlaceOrder", {"user_id": "u1", "items": ITEMS})
    assert order["email"] == "ada@example.com"
    assert order["reservation_ids"] == ["r-WIDGET-1", "r-GADGET-7"]
    assert order["created_at"] == NOW
    assert [(c.module, c.method) for c in orders.module_calls] == [
        ("users", "get_user"), ("inventory", "reserve"), ("inventory", "reserve"),
    ]  # fmt: skip
    assert stock.released == []
    assert await orders.call("GetOrder", {"id": order["id"]}) == order


async def test_a_failed_reservation_releases_the_earlier_ones(make_orders: Callable[[Stock], ModuleHarness]) -> None:
    stock = Stock(fail_on="GADGET-7")
    orders = make_orders(stock)
    with pytest.raises(FailedPrecondition, match="not enough stock of GADGET-7"):
        await orders.call("PlaceOrder", {"user_id": "u1", "items": ITEMS})
    assert stock.released == ["r-WIDGET-1"], "the compensation gave the first reservation back"
    kinds = [e["kind"] for e in orders.audit[-1].events]
    assert kinds.count("compensation") == 1 and "compensation_error" not in kinds


async def test_an_unknown_user_reserves_nothing(make_orders: Callable[[Stock], ModuleHarness]) -> None:
    stock = Stock()
    orders = make_orders(stock)
    with pytest.raises(NotFound, match="no user with id 'nobody'"):
        await orders.call("PlaceOrder", {"user_id": "nobody", "items": ITEMS})
    assert [c.method for c in orders.module_calls] == ["get_user"]


async def test_an_order_needs_at_least_one_item(make_orders: Callable[[Stock], ModuleHarness]) -> None:
    orders = make_orders(Stock())
    with pytest.raises(InvalidArgument, match="items"):
        await orders.call("PlaceOrder", {"user_id": "u1", "items": []})
    assert orders.module_calls == []
