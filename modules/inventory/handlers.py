"""Handlers of the inventory module."""

from modules.inventory._stock import OutOfStock, UnknownSku, stock_book
from modules.inventory.models import GetStock, Release, Released, Reservation, Reserve, Stock
from runtime import GlobalContext, LocalContext, handler
from runtime.errors import FailedPrecondition, NotFound


@handler
async def reserve(req: Reserve, lctx: LocalContext, gctx: GlobalContext) -> Reservation:
    try:
        rid, remaining = await stock_book().reserve(req.sku, req.quantity)
    except UnknownSku:
        raise NotFound(f"no such SKU {req.sku!r}") from None
    except OutOfStock as exc:
        raise FailedPrecondition(
            f"not enough stock of {req.sku}: {req.quantity} asked, {exc.available} available"
        ) from None
    return Reservation(reservation_id=rid, sku=req.sku, quantity=req.quantity, remaining=remaining)


@handler
async def release(req: Release, lctx: LocalContext, gctx: GlobalContext) -> Released:
    done = await stock_book().release(req.reservation_id)
    if done is None:
        raise NotFound(f"no reservation {req.reservation_id!r}")
    return Released(reservation_id=req.reservation_id, released=done)


@handler
async def get_stock(req: GetStock, lctx: LocalContext, gctx: GlobalContext) -> Stock:
    available = await stock_book().available(req.sku)
    if available is None:
        raise NotFound(f"no such SKU {req.sku!r}")
    return Stock(sku=req.sku, available=available)
