"""Transformers between users 2025-01-15 and 2025-06-01.

2025-06-01 split ``name`` into ``given_name`` and ``family_name``. Going forward, ``name`` is
split at its first space that follows a non-space character and has more text after it:
"Grace Brewster Hopper" → "Grace" + "Brewster Hopper", "Plato" → "Plato" + "", and leading,
trailing or doubled spaces stay where they were (" Grace" → " Grace" + "", "Ada  King" → "Ada" +
" King"). So every name valid at 2025-01-15 (1 to 200 characters) gives a non-empty
``given_name`` of at most 200 characters and a ``family_name`` of at most 199: no request that
2025-01-15 accepts is refused for its name. Going backward the two are joined with one space
(or ``given_name`` alone when ``family_name`` is empty), which gives every such name back exactly.

The email rule is the same in both versions. The handler's model (pydantic's ``EmailStr``) is
stricter than the published ``string.email`` rule, so an address such as ``a@b`` passes the
2025-01-15 contract and is then refused INVALID_ARGUMENT naming ``email``, a field both versions
call by that name.
"""

from __future__ import annotations

from typing import Any

FROM = "2025-01-15"
TO = "2025-06-01"


def split_name(name: str) -> tuple[str, str]:
    """``name`` as (given, family); ``" ".join`` of a non-empty family gives ``name`` back."""
    start = len(name) - len(name.lstrip(" "))
    cut = name.find(" ", start)
    if cut <= 0 or cut == len(name) - 1:
        return name, ""
    return name[:cut], name[cut + 1 :]


def forward_create_user_request(request: dict[str, Any]) -> dict[str, Any]:
    """CreateUser request: ``name`` → ``given_name`` + ``family_name``."""
    out = dict(request)
    name = out.pop("name", None)
    if isinstance(name, str):
        out["given_name"], out["family_name"] = split_name(name)
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
