"""The users module's messages (API version 2025-06-01).

2025-06-01 split ``name`` into ``given_name`` and ``family_name``; callers pinned to 2025-01-15
keep sending and receiving ``name`` through ``transformers/v2025_06_01.py``.
"""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, EmailStr, Field

GivenName = Annotated[str, Field(min_length=1, max_length=200)]
# Empty for people with a single name: the 2025-01-15 `name` "Plato" has no family name.
FamilyName = Annotated[str, Field(max_length=200)]


class CreateUser(BaseModel):
    """A new user."""

    given_name: GivenName
    family_name: FamilyName = ""
    email: EmailStr


class GetUser(BaseModel):
    """Which user to read."""

    id: str


class User(BaseModel):
    """A user account."""

    id: str
    given_name: str
    family_name: str
    email: EmailStr
    created_at: datetime
