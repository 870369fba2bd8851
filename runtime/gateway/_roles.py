"""Role checks: a method lists the roles it needs, and the caller must hold every one of them.

"All of them", not "any of them": a method that lists ``["orders.read", "admin"]`` is one that
needs both. A manifest that wants alternatives lists a role that each of the alternatives grants,
which keeps the rule readable from the manifest alone.

    >>> check_roles(Principal("ana", roles=("orders.read",)), ["orders.read"])
    >>> check_roles(Principal("ana"), ["orders.read"])
    Traceback (most recent call last):
    ...
    runtime.errors.PermissionDenied: missing role 'orders.read'
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime.errors import PermissionDenied
from runtime.identity import Principal

__all__ = ["check_roles", "missing_roles"]


def missing_roles(principal: Principal, required: Sequence[str]) -> list[str]:
    """The required roles the principal lacks, in the order the method lists them."""
    held = set(principal.roles)
    missing: list[str] = []
    for role in required:
        if role not in held and role not in missing:
            missing.append(role)
    return missing


def check_roles(principal: Principal, required: Sequence[str]) -> None:
    """Raise :class:`~runtime.errors.PermissionDenied` naming every required role not held."""
    missing = missing_roles(principal, required)
    if not missing:
        return
    names = ", ".join(repr(role) for role in missing)
    noun = "role" if len(missing) == 1 else "roles"
    raise PermissionDenied(f"missing {noun} {names}")
