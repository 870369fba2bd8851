"""Handlers of the inventory module."""

from collections.abc import AsyncIterator, Awaitable, Callable

from modules.inventory._stock import OutOfStock, UnknownSku, stock_book
from modules.inventory.models import (
    GetStock,
    Release,
    Released,
    Reservation,
    Reserve,
    Restock,
    Restocked,
    Stock,
)
from runtime import GlobalContext, LocalContext, handler
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound

MAX_BATCH = 1000
"""Lines one RestockBatch may carry: its answer lists each SKU, and must stay one message."""


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


@handler
async def restock_batch(reqs: AsyncIterator[Restock], lctx: LocalContext, gctx: GlobalContext) -> Restocked:
    """Client streaming: add stock line by line as the lines arrive; all or nothing.

    Each line is applied at once and registers its undo, so a batch that fails part-way (a bad
    line, a caller that hangs up, the deadline) takes back what it added: the lifecycle runs the
    undo steps newest first.
    """
    book = stock_book()
    lines = units = 0
    levels: dict[str, int] = {}
    async for line in reqs:
        if lines == MAX_BATCH:
            raise InvalidArgument(f"a restock batch has at most {MAX_BATCH} lines; send the rest in another")
        levels[line.sku] = await book.adjust(line.sku, line.quantity)
        lctx.compensate(_undo(line.sku, line.quantity), name=f"unstock {line.sku}")
        lines += 1
        units += line.quantity
    return Restocked(lines=lines, units=units, stock=[Stock(sku=s, available=n) for s, n in sorted(levels.items())])


def _undo(sku: str, quantity: int) -> Callable[[], Awaitable[None]]:
    """The undo step of one restock line: take its units back."""

    async def unstock() -> None:
        await stock_book().adjust(sku, -quantity)

    return unstock


@handler
async def check_stock(reqs: AsyncIterator[GetStock], lctx: LocalContext, gctx: GlobalContext) -> AsyncIterator[Stock]:
    """Bidirectional: a stock-taking session; each SKU asked is answered at once with its level.

    An unknown SKU ends the session with NOT_FOUND naming it, as GetStock would answer.
    """
    book = stock_book()
    async for req in reqs:
        available = await book.available(req.sku)
        if available is None:
            raise NotFound(f"no such SKU {req.sku!r}")
        yield Stock(sku=req.sku, available=available)
