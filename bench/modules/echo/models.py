"""The echo module's messages: a request and a response with the same fields and field numbers.

Because both encode the same way, the bare reference server (which answers with the request's
own bytes) moves exactly the bytes a real echo call moves, and the two can be compared.
"""

from typing import Annotated

from pydantic import BaseModel, Field


class Echo(BaseModel):
    """What to send back."""

    text: Annotated[str, Field(max_length=1024)]
    count: Annotated[int, Field(ge=0)] = 0


class Echoed(BaseModel):
    """What was sent."""

    text: str
    count: int


class EchoMany(BaseModel):
    """What to send back, and how many times (the streaming benchmark's request)."""

    text: Annotated[str, Field(max_length=1024)]
    count: Annotated[int, Field(ge=0)] = 0
    times: Annotated[int, Field(ge=0, le=10_000_000)] = 1
