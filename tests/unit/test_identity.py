"""The principal a gateway forwards to a worker, and what the worker reads back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runtime.identity import ANONYMOUS, Principal, principal_from_header, principal_header


def test_separators_inside_a_tokens_claims_cannot_change_what_the_worker_sees() -> None:
    forged = [
        Principal("module:billing;;internal", (), "jwt"),  # would read as an internal module call
        Principal("mallory;admin", ("reader",), "jwt"),  # would add the role admin
        Principal("bob", ("reader,admin",), "jwt"),  # one role, not two
    ]
    for principal in forged:
        assert principal_from_header(principal_header(principal)) == principal


def test_the_header_stays_readable_for_common_ids() -> None:
    header = principal_header(Principal("ada@example.com", ("users:read", "users:write"), "jwt"))
    assert header == "ada@example.com;users:read,users:write;jwt"


def test_headers_no_gateway_writes_read_as_nobody_in_particular() -> None:
    assert principal_from_header(None) == ANONYMOUS
    assert principal_from_header("") == ANONYMOUS
    assert principal_from_header("ada;admin") == ANONYMOUS  # two fields, not three
    assert principal_from_header("ada;admin;root").method == "anonymous"  # no such method


@given(
    subject=st.text(min_size=1),
    roles=st.lists(st.text(min_size=1), max_size=4).map(tuple),
    method=st.sampled_from(["jwt", "api_key", "anonymous", "internal"]),
)
def test_any_principal_survives_the_trip(subject: str, roles: tuple[str, ...], method: str) -> None:
    principal = Principal(subject, roles, method)  # type: ignore[arg-type]
    header = principal_header(principal)
    assert header.isascii()  # a gRPC metadata value
    assert principal_from_header(header) == principal
