"""Handlers of the orders module."""

import uuid

from modules.inventory.models import Release, Reserve
from modules.orders._book import order_book
from modules.orders.models import GetOrder, Order, OrderStatus, PlaceOrder
from modules.users.models import GetUser
from runtime import GlobalContext, LocalContext, handler
from runtime.errors import NotFound


@handler
async def place_order(req: PlaceOrder, lctx: LocalContext, gctx: GlobalContext) -> Order:
    user = await gctx.modules.users.get_user(GetUser(id=req.user_id))
    order_id = uuid.uuid4().hex
    reservation_ids: list[str] = []
    for item in req.items:
        reservation = await gctx.modules.inventory.reserve(
            Reserve(sku=item.sku, quantity=item.quantity, order_id=order_id)
        )
        reservation_ids.append(reservation.reservation_id)
        lctx.compensate(_releaser(gctx, reservation.reservation_id))
    order = Order(
        id=order_id,
        user_id=user.id,
        email=user.email,
        items=req.items,
        reservation_ids=reservation_ids,
        status=OrderStatus.PLACED,
        created_at=gctx.clock.now(),
    )
    await order_book().put(order)
    return order


def _releaser(gctx: GlobalContext, reservation_id: str):  # type: ignore[no-untyped-def]
    """The undo step of one reservation: give the stock back."""

    async def release() -> None:
        await gctx.modules.inventory.release(Release(reservation_id=reservation_id))

    return release


@handler
async def get_order(req: GetOrder, lctx: LocalContext, gctx: GlobalContext) -> Order:
    order = await order_book().get(req.id)
    if order is None:
        raise NotFound(f"no order with id {req.id!r}")
    return order
