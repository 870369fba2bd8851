"""The ingress's peer address and request id rules."""

from __future__ import annotations

import pytest

from runtime.gateway._ingress import peer_ip
from runtime.identity import is_valid_request_id, request_id_of


@pytest.mark.parametrize(
    ("peer", "ip"),
    [("ipv4:1.2.3.4:5", "1.2.3.4"), ("ipv6:[2001:db8::1]:443", "2001:db8::1"), ("unix:/x", None), ("", None)],
)
def test_peer_ip_reads_grpc_peer_strings(peer: str, ip: str | None) -> None:
    assert peer_ip(peer) == ip


@pytest.mark.parametrize("value", ["abc", "req-1.2:3_x", "A" * 128, "0"])
def test_a_well_formed_request_id_is_kept(value: str) -> None:
    assert is_valid_request_id(value)
    assert request_id_of(value) == value


@pytest.mark.parametrize("value", ["", "A" * 129, "has space", "semi;colon", "caf\u00e9", "new\nline"])
def test_a_malformed_request_id_is_replaced(value: str) -> None:
    generated = request_id_of(value)
    assert generated != value
    assert is_valid_request_id(generated)


def test_a_missing_request_id_is_generated_and_unique() -> None:
    ids = {request_id_of(None) for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(is_valid_request_id(i) for i in ids)
