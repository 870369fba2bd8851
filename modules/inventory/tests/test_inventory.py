"""The inventory module: reservations take stock, releases give it back, once."""

from __future__ import annotations

import uuid

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


async def test_a_restock_batch_adds_every_line_and_reports_each_sku(inventory: ModuleHarness) -> None:
    before = await available(inventory, "WIDGET-1")
    sku = f"NEW-{uuid.uuid4().hex[:8].upper()}"
    lines = [{"sku": "WIDGET-1", "quantity": 5}, {"sku": sku, "quantity": 7}, {"sku": "WIDGET-1", "quantity": 1}]
    (summary,) = [m async for m in inventory.stream("RestockBatch", lines)]
    assert (summary["lines"], summary["units"]) == (3, 13)
    assert summary["stock"] == [{"sku": sku, "available": 7}, {"sku": "WIDGET-1", "available": before + 6}]
    assert inventory.audit[-1].messages == {"received": 3, "sent": 1}


async def test_a_restock_batch_with_a_bad_line_takes_back_what_it_added(inventory: ModuleHarness) -> None:
    before = await available(inventory, "GADGET-7")
    lines = [{"sku": "GADGET-7", "quantity": 4}, {"sku": "GADGET-7", "quantity": 0}]
    with pytest.raises(InvalidArgument, match="quantity"):
        [m async for m in inventory.stream("RestockBatch", lines)]
    (batch,) = [record for record in inventory.audit if record.method.endswith("/RestockBatch")]
    assert batch.outcome == "INVALID_ARGUMENT"
    assert await available(inventory, "GADGET-7") == before  # the undo step ran


async def test_check_stock_answers_each_sku_as_it_is_asked_and_ends_at_an_unknown_one(inventory: ModuleHarness) -> None:
    asked = [{"sku": "WIDGET-1"}, {"sku": "GIZMO-42"}, {"sku": "NO-SUCH-SKU"}]
    answers = []
    with pytest.raises(NotFound, match="NO-SUCH-SKU"):
        async for stock in inventory.stream("CheckStock", asked):
            answers.append(stock["sku"])
    assert answers == ["WIDGET-1", "GIZMO-42"]
