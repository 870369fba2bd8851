"""Role checks: the caller needs every role a method lists."""

from __future__ import annotations

import pytest

from runtime.errors import PermissionDenied
from runtime.identity import ANONYMOUS, Principal, check_roles, missing_roles

ANA = Principal("ana", roles=("orders.read", "orders.write"), method="jwt")


def test_a_method_without_required_roles_admits_anyone() -> None:
    check_roles(ANONYMOUS, [])


def test_holding_every_required_role_admits() -> None:
    check_roles(ANA, ["orders.read", "orders.write"])


def test_holding_only_some_roles_is_denied_naming_the_missing_one() -> None:
    with pytest.raises(PermissionDenied, match="missing role 'admin'"):
        check_roles(ANA, ["orders.read", "admin"])


def test_every_missing_role_is_named_once_in_order() -> None:
    with pytest.raises(PermissionDenied) as caught:
        check_roles(ANONYMOUS, ["b", "a", "b"])
    assert caught.value.message == "missing roles 'b', 'a'"
    assert missing_roles(ANONYMOUS, ["b", "a", "b"]) == ["b", "a"]


def test_role_names_are_case_sensitive() -> None:
    with pytest.raises(PermissionDenied):
        check_roles(Principal("bo", roles=("Admin",)), ["admin"])
