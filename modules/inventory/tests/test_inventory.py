"""The inventory module: reservations take stock, releases give it back, once."""

from __future__ import annotations

import pytest

from runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from runtime.testing import ModuleHarness


@pytest.fixture
def inventory(module_harness: object) -> ModuleHarness:
    return module_harness("inventory")  # type: ignore[operator, no-any-return]


async def available(inventory: ModuleHarness, sku: str) -> int:
    stock = await inventory.call("GetStock", {"sku": sku})
    return int(stock["available"])


async def test_a_reservation_takes_stock_and_its_release_gives_it_back(inventory: ModuleHarness) -> None:
    before = await available(inventory, "WIDGET-1")
    held = await inventory.call("Reserve", {"sku": "WIDGET-1", "quantity": 2})
    assert held["remaining"] == before - 2
    assert await available(inventory, "WIDGET-1") == before - 2
    released = await inventory.call("Release", {"reservation_id": held["reservation_id"]})
    assert released["released"] is True
    assert await available(inventory, "WIDGET-1") == before
    again = await inventory.call("Release", {"reservation_id": held["reservation_id"]})
    assert again["released"] is False, "releasing twice gives nothing back twice"
    assert await available(inventory, "WIDGET-1") == before


async def test_more_than_is_available_is_a_failed_precondition(inventory: ModuleHarness) -> None:
    left = await available(inventory, "GIZMO-42")
    with pytest.raises(FailedPrecondition, match=f"{left + 1} asked, {left} available"):
        await inventory.call("Reserve", {"sku": "GIZMO-42", "quantity": left + 1})
    assert await available(inventory, "GIZMO-42") == left


async def test_unknown_skus_and_reservations_are_not_found(inventory: ModuleHarness) -> None:
    with pytest.raises(NotFound, match="no such SKU 'NOPE-1'"):
        await inventory.call("Reserve", {"sku": "NOPE-1", "quantity": 1})
    with pytest.raises(NotFound, match="no reservation 'r-none'"):
        await inventory.call("Release", {"reservation_id": "r-none"})


async def test_a_malformed_sku_is_refused_before_the_handler(inventory: ModuleHarness) -> None:
    with pytest.raises(InvalidArgument, match="sku"):
        await inventory.call("Reserve", {"sku": "lower case", "quantity": 1})
    assert [e["kind"] for e in inventory.audit[-1].events if e["kind"].startswith("handler")] == []
