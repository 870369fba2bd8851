"""The worker's admission: who may call its methods, and for whom."""

from __future__ import annotations

import pytest

from runtime.errors import PermissionDenied, Unauthenticated
from runtime.identity import Peer, Principal, principal_header
from runtime.manifest import MethodPolicy
from runtime.worker._admission import Admission

USERS = Admission("users", callers=frozenset({"orders"}), client_roles={"developer": ("users:read",)})
GET_USER = MethodPolicy(roles=("users:read",))
RESERVE = MethodPolicy(roles=("inventory:write",), inner_roles="module")
ROOT = principal_header(Principal("root", ("users:read", "users:write", "admin"), "jwt"))
ADA = principal_header(Principal("ada", ("orders:write",), "jwt"))


def test_nobody_proved_anything_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated, match="users serves only the gateway and modules"):
        USERS.principal(None, ROOT, GET_USER)


def test_the_gateway_is_believed_it_checked_the_roles() -> None:
    assert USERS.principal(Peer.gateway(), ROOT, GET_USER).subject == "root"
    assert USERS.principal(Peer.gateway(), ADA, GET_USER).subject == "ada"


def test_a_client_certificate_is_its_own_principal_and_a_forged_header_is_ignored() -> None:
    principal = USERS.principal(Peer.client("developer"), ROOT, GET_USER)
    assert (principal.subject, principal.roles, principal.method) == ("developer", ("users:read",), "mtls")
    with pytest.raises(PermissionDenied, match="missing role 'users:write'"):
        USERS.principal(Peer.client("developer"), ROOT, MethodPolicy(roles=("users:write",)))
    with pytest.raises(PermissionDenied, match="missing role 'users:read'"):
        USERS.principal(Peer.client("mallory"), ROOT, GET_USER)


def test_a_module_that_did_not_declare_this_one_is_refused() -> None:
    with pytest.raises(PermissionDenied, match=r"module 'inventory' did not declare capability modules=\['users'\]"):
        USERS.principal(Peer.module("inventory"), ROOT, MethodPolicy(public=True))


def test_an_inner_call_checks_the_original_callers_roles_by_default() -> None:
    with pytest.raises(PermissionDenied, match=r"missing role 'users:read'.*orders called users on behalf of 'ada'"):
        USERS.principal(Peer.module("orders"), ADA, GET_USER)
    principal = USERS.principal(Peer.module("orders"), ROOT, GET_USER)
    assert (principal.subject, principal.via) == ("root", "orders")


def test_an_inner_call_to_a_module_trusting_method_needs_only_the_declaration() -> None:
    inventory = Admission("inventory", callers=frozenset({"orders"}))
    principal = inventory.principal(Peer.module("orders"), ADA, RESERVE)
    assert (principal.subject, principal.via, principal.roles) == ("ada", "orders", ("orders:write",))
    with pytest.raises(PermissionDenied):  # a module that did not declare inventory gets no pass
        inventory.principal(Peer.module("users"), ADA, RESERVE)


def test_the_hub_does_not_call_methods() -> None:
    with pytest.raises(PermissionDenied, match="hub does not call module methods"):
        USERS.principal(Peer.hub(), ROOT, MethodPolicy(public=True))


def test_a_public_method_admits_any_authenticated_peer_without_roles() -> None:
    public = MethodPolicy(public=True)
    assert USERS.principal(Peer.client("mallory"), None, public).subject == "mallory"
    assert USERS.principal(Peer.gateway(), None, public).subject == "anonymous"


def test_a_module_declared_since_the_worker_started_is_admitted_once_the_declarations_are_read_again() -> None:
    declared = [frozenset[str]()]
    users = Admission("users", callers=frozenset(), reread=lambda: declared[0])
    with pytest.raises(PermissionDenied):
        users.principal(Peer.module("billing"), ROOT, GET_USER)
    declared[0] = frozenset({"billing"})  # billing's module.toml now says modules = ["users"]
    users._reread_at = 0.0  # the next read is due
    assert users.principal(Peer.module("billing"), ROOT, GET_USER).via == "billing"
