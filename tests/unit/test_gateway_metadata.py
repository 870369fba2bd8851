"""Ingress metadata normalisation and the request id."""

from __future__ import annotations

import pytest

from runtime.gateway._metadata import Metadata, is_valid_request_id, normalise, peer_ip, request_id

PEER = "ipv4:10.1.2.3:51234"


def test_keys_are_lower_cased() -> None:
    md = normalise([("X-Request-Id", "abc"), ("X-API-Version", "stable")], peer=PEER)
    assert md["x-request-id"] == "abc"
    assert md["x-api-version"] == "stable"
    assert "X-Request-Id" not in md


@pytest.mark.parametrize(
    "key",
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "trailer", "proxy-authorization"],
)
def test_hop_by_hop_headers_are_stripped(key: str) -> None:
    md = normalise([(key, "x"), ("x-keep", "1")], peer=PEER)
    assert key not in md
    assert md["x-keep"] == "1"


def test_te_trailers_is_kept_and_any_other_te_dropped() -> None:
    assert normalise([("te", "trailers")], peer=PEER)["te"] == "trailers"
    assert "te" not in normalise([("te", "gzip")], peer=PEER)


def test_headers_named_by_connection_are_hop_by_hop_too() -> None:
    md = normalise([("Connection", "close, X-Private-Hop"), ("x-private-hop", "1"), ("x-end", "2")], peer=PEER)
    assert "x-private-hop" not in md
    assert md["x-end"] == "2"


def test_pseudo_headers_are_dropped() -> None:
    assert ":authority" not in normalise([(":authority", "gw:50051")], peer=PEER)


def test_forwarded_for_ends_with_the_peer() -> None:
    md = normalise([], peer=PEER)
    assert md["x-forwarded-for"] == "10.1.2.3"


def test_forwarded_for_keeps_the_chain_and_appends_the_peer() -> None:
    md = normalise(
        [("X-Forwarded-For", "203.0.113.9, 198.51.100.2"), ("x-forwarded-for", "192.0.2.1")], peer="ipv6:[::1]:4000"
    )
    assert md.get_all("x-forwarded-for") == ("203.0.113.9, 198.51.100.2, 192.0.2.1, ::1",)


def test_a_unix_socket_peer_adds_no_address() -> None:
    assert "x-forwarded-for" not in normalise([], peer="unix:/tmp/gw.sock")


def test_binary_values_stay_bytes_and_text_stays_text() -> None:
    md = normalise([("Trace-Bin", b"\x00\x01"), ("x-text", b"caf\xe9")], peer=PEER)
    assert md["trace-bin"] == b"\x00\x01"
    assert md["x-text"] == "caf\u00e9"
    assert md.text("trace-bin") is None
    assert md.text("x-text") == "caf\u00e9"


def test_repeated_keys_keep_every_value_in_order() -> None:
    md = normalise([("x-flags", "a"), ("X-Flags", "b")], peer=PEER)
    assert md["x-flags"] == "a"
    assert md.get_all("x-flags") == ("a", "b")
    assert ("x-flags", "b") in md.pairs


def test_normalised_metadata_is_an_immutable_mapping() -> None:
    md = normalise([("a", "1")], peer=PEER)
    assert isinstance(md, Metadata)
    assert dict(md) == {"a": "1", "x-forwarded-for": "10.1.2.3"}
    with pytest.raises(TypeError):
        md["a"] = "2"  # type: ignore[index]


@pytest.mark.parametrize(
    ("peer", "ip"),
    [("ipv4:1.2.3.4:5", "1.2.3.4"), ("ipv6:[2001:db8::1]:443", "2001:db8::1"), ("unix:/x", None), ("", None)],
)
def test_peer_ip_reads_grpc_peer_strings(peer: str, ip: str | None) -> None:
    assert peer_ip(peer) == ip


@pytest.mark.parametrize("value", ["abc", "req-1.2:3_x", "A" * 128, "0"])
def test_a_well_formed_request_id_is_kept(value: str) -> None:
    assert is_valid_request_id(value)
    assert request_id({"x-request-id": value}) == value


@pytest.mark.parametrize("value", ["", "A" * 129, "has space", "semi;colon", "caf\u00e9", "new\nline"])
def test_a_malformed_request_id_is_replaced(value: str) -> None:
    generated = request_id({"x-request-id": value})
    assert generated != value
    assert is_valid_request_id(generated)


def test_a_missing_request_id_is_generated_and_unique() -> None:
    ids = {request_id({}) for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(is_valid_request_id(i) for i in ids)


def test_a_binary_request_id_is_replaced() -> None:
    assert request_id({"x-request-id": b"abc"}) != "abc"
