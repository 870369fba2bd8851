"""Property 35 over random role sets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import PermissionDenied
from runtime.identity import Principal, check_roles

roles = st.lists(st.sampled_from(["admin", "orders.read", "orders.write", "users.read", "billing", "Admin"]), max_size=6)


@settings(max_examples=300, deadline=None)
@given(held=roles, required=roles)
def test_access_is_allowed_iff_every_required_role_is_held(held: list[str], required: list[str]) -> None:
    """Property 35: Roles are enforced.

    Access is allowed iff the principal holds every required role; a denial names exactly the
    required roles that are missing.
    """
    principal = Principal("caller", roles=tuple(held), method="jwt")
    missing = [role for role in dict.fromkeys(required) if role not in held]
    try:
        check_roles(principal, required)
    except PermissionDenied as exc:
        assert missing
        for role in missing:
            assert repr(role) in exc.message
        for role in set(held):
            assert repr(role) not in exc.message or role in missing
    else:
        assert not missing
