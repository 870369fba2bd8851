"""Property 35 end to end through the ingress: roles travel in a JWT and gate the method."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import PermissionDenied, Unauthenticated
from runtime.gateway._auth import ApiKey, Authenticator, hash_api_key, issue_dev_token
from runtime.identity import check_roles

SECRET = "property-test-secret-of-32-bytes-or-more"
AUTH = Authenticator(
    hs256_secret=SECRET,
    issuer="modrpc-test",
    audience="modrpc",
    api_keys={"svc": ApiKey(hash_api_key("svc-key"), "svc", ("users.read",))},
)

role_names = st.from_regex(r"[a-z][a-z0-9_.:-]{0,15}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(held=st.lists(role_names, max_size=5, unique=True), required=st.lists(role_names, max_size=4))
def test_a_token_admits_iff_it_carries_every_required_role(held: list[str], required: list[str]) -> None:
    """Property 35: Roles are enforced.

    A caller whose JWT carries roles ``held`` may call a method requiring ``required`` iff
    every required role is held; otherwise it gets PERMISSION_DENIED naming a missing role.
    """
    token = issue_dev_token(
        SECRET, subject="caller", roles=held, ttl_seconds=60, issuer="modrpc-test", audience="modrpc"
    )
    principal = AUTH.authenticate({"authorization": f"Bearer {token}"}, public=False)
    assert principal.roles == tuple(held)
    allowed = set(required) <= set(held)
    try:
        check_roles(principal, required)
    except PermissionDenied as exc:
        assert not allowed
        assert any(repr(role) in exc.message for role in set(required) - set(held))
    else:
        assert allowed


@settings(max_examples=100, deadline=None)
@given(key=st.text(min_size=1, max_size=40))
def test_only_the_exact_api_key_authenticates(key: str) -> None:
    """Property 35: Roles are enforced (an API key grants its roles only to its exact holder)."""
    try:
        principal = AUTH.authenticate({"x-api-key": key}, public=False)
    except Unauthenticated as exc:
        assert key.strip() != "svc-key"
        assert exc.message in {"unknown API key", "malformed API key"}  # never the key itself
    else:
        assert key.strip() == "svc-key"
        assert principal.roles == ("users.read",)
