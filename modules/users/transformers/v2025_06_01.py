"""Transformers between users 2025-01-15 and 2025-06-01.

2025-06-01 split ``name`` into ``given_name`` and ``family_name``. Going forward, ``name`` is
split on its first space ("Grace Brewster Hopper" → "Grace" + "Brewster Hopper"; "Plato" →
"Plato" + ""). Going backward the two are joined with one space, so a round trip of any name
without leading, trailing or doubled spaces gives the same name back.
"""

from __future__ import annotations

from typing import Any

FROM = "2025-01-15"
TO = "2025-06-01"


def forward_create_user_request(request: dict[str, Any]) -> dict[str, Any]:
    """CreateUser request: ``name`` → ``given_name`` + ``family_name``."""
    out = dict(request)
    name = out.pop("name", None)
    if name is not None:
        given, _, family = str(name).partition(" ")
        out["given_name"] = given
        out["family_name"] = family
    return out


def _join_name(user: dict[str, Any]) -> dict[str, Any]:
    out = dict(user)
    given = out.pop("given_name", "")
    family = out.pop("family_name", "")
    out["name"] = f"{given} {family}" if family else given
    return out


def backward_create_user_response(response: dict[str, Any]) -> dict[str, Any]:
    """CreateUser response: ``given_name`` + ``family_name`` → ``name``."""
    return _join_name(response)


def backward_get_user_response(response: dict[str, Any]) -> dict[str, Any]:
    """GetUser response: ``given_name`` + ``family_name`` → ``name``."""
    return _join_name(response)
