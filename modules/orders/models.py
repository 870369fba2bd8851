"""The orders module's messages."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field


class OrderItem(BaseModel):
    sku: Annotated[str, Field(min_length=1, max_length=64)]
    quantity: Annotated[int, Field(ge=1, le=10_000)]


class PlaceOrder(BaseModel):
    """Place an order for a user; every item's stock is reserved or none is."""

    user_id: str
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=50)]


class OrderStatus(StrEnum):
    PLACED = "placed"
    CANCELLED = "cancelled"


class Order(BaseModel):
    id: str
    user_id: str
    email: str
    items: list[OrderItem]
    reservation_ids: list[str]
    status: OrderStatus
    created_at: datetime


class GetOrder(BaseModel):
    id: str
