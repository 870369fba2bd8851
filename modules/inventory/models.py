"""The inventory module's messages."""

from typing import Annotated

from pydantic import BaseModel, Field

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Z0-9][A-Z0-9-]*$")]


class Reserve(BaseModel):
    """Hold ``quantity`` units of ``sku`` for an order."""

    sku: Sku
    quantity: Annotated[int, Field(ge=1, le=10_000)]
    order_id: str = ""


class Reservation(BaseModel):
    """A hold on stock; release it to give the units back."""

    reservation_id: str
    sku: str
    quantity: int
    remaining: int


class Release(BaseModel):
    """Give a reservation's units back. Releasing twice is harmless."""

    reservation_id: str


class Released(BaseModel):
    reservation_id: str
    released: bool
    """False when the reservation had already been released."""


class GetStock(BaseModel):
    sku: Sku


class Stock(BaseModel):
    sku: str
    available: int


class Restock(BaseModel):
    """One line of a restock batch: ``quantity`` more units of ``sku`` (a new SKU is added)."""

    sku: Sku
    quantity: Annotated[int, Field(ge=1, le=10_000)]


class Restocked(BaseModel):
    """What a restock batch did: how many lines and units, and each SKU's stock after it."""

    lines: int
    units: int
    stock: list[Stock]
