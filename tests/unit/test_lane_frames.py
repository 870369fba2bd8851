"""The lane's wire format: bodies round-trip, malformed bytes are refused, big frames are skipped."""

from __future__ import annotations

import importlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.lane._frames import (
    CANCEL,
    HEADER,
    REQUEST,
    RESPONSE,
    STATUS,
    Frame,
    FrameError,
    FrameReader,
    Oversized,
    Request,
    Response,
    Status,
    decode_request,
    decode_response,
    decode_status,
    encode_cancel,
    encode_request,
    encode_response,
    encode_status,
    too_large,
)


def only_frame(data: bytes) -> Frame:
    """The one frame in ``data``, read by a reader with the default cap."""
    frames = FrameReader().feed(data)
    assert len(frames) == 1 and isinstance(frames[0], Frame)
    return frames[0]


def test_the_public_surface_is_the_server_the_client_its_streams_and_the_where_method() -> None:
    lane = importlib.import_module("runtime.lane")
    assert lane.__all__ == [
        "PROTOCOL", "WHERE_METHOD", "LaneClient", "LaneLimits", "LaneServer", "LaneStream", "lane_limits",
        "parse_where", "where_handler",
    ]  # fmt: skip
    assert lane.WHERE_METHOD == "/modrpc.lane.v1.Lane/Where"
    assert lane.PROTOCOL == "modrpc-lane/2"


def test_a_where_answer_names_the_address_only_in_the_format_spoken_here() -> None:
    lane = importlib.import_module("runtime.lane")
    assert lane.parse_where(b"modrpc-lane/2 10.0.0.7:40123") == "10.0.0.7:40123"
    assert lane.parse_where(b"modrpc-lane/2 [::1]:40123") == "[::1]:40123"
    for other in (b"modrpc-lane/1 10.0.0.7:1", b"10.0.0.7:40123", b"modrpc-lane/2", b"", b"\xff\xfe"):
        assert lane.parse_where(other) is None, other


# -- round trips -----------------------------------------------------------------------------------


def test_a_request_round_trips_with_text_and_binary_metadata_kept_apart() -> None:
    metadata = (
        ("x-request-id", "r-1"),
        ("trace-bin", b"\x00\xff"),
        ("x-note", "b\u00e9b\u00e9 \u2603"),
    )
    frame = only_frame(
        encode_request(7, "/users.v1.UsersService/GetUser", metadata, 1.5, b"\x08\x01")
    )
    assert (frame.stream_id, frame.kind) == (7, REQUEST)
    request = decode_request(frame.body)
    assert request == Request("/users.v1.UsersService/GetUser", metadata, 1.5, b"\x08\x01")
    assert isinstance(request.metadata[0][1], str) and isinstance(request.metadata[1][1], bytes)


def test_a_request_without_deadline_metadata_or_payload_round_trips() -> None:
    frame = only_frame(encode_request(1, "/a.v1.A/\u00c9t\u00e9", (), None, b""))
    assert decode_request(frame.body) == Request("/a.v1.A/\u00c9t\u00e9", (), None, b"")


def test_a_deadline_already_passed_travels_as_zero_seconds_left() -> None:
    frame = only_frame(encode_request(1, "/a.v1.A/B", (), -3.0, b""))
    assert decode_request(frame.body).timeout == 0.0


def test_a_response_round_trips_with_its_metadata() -> None:
    frame = only_frame(
        encode_response(9, (("x-request-id", "r-9"), ("k-bin", b"\x01")), b"payload")
    )
    assert (frame.stream_id, frame.kind) == (9, RESPONSE)
    assert decode_response(frame.body) == Response(
        (("x-request-id", "r-9"), ("k-bin", b"\x01")), b"payload"
    )


def test_a_status_round_trips_with_binary_details_intact() -> None:
    details = bytes(range(256))
    frame = only_frame(
        encode_status(3, 5, "no user 42 \u2014 gone", (("grpc-status-details-bin", details),))
    )
    assert (frame.stream_id, frame.kind) == (3, STATUS)
    assert decode_status(frame.body) == Status(
        5, "no user 42 \u2014 gone", (("grpc-status-details-bin", details),)
    )


def test_a_cancel_frame_is_a_bare_header() -> None:
    assert encode_cancel(11) == HEADER.pack(0, 11, CANCEL)
    assert only_frame(encode_cancel(11)) == Frame(11, CANCEL, b"")


pairs = st.lists(
    st.tuples(st.text(max_size=20), st.one_of(st.text(max_size=40), st.binary(max_size=40))),
    max_size=6,
).map(tuple)


@given(
    stream_id=st.integers(0, 2**32 - 1),
    method=st.text(max_size=60),
    metadata=pairs,
    timeout=st.one_of(st.none(), st.floats(0, 1e6)),
    payload=st.binary(max_size=300),
    cut=st.integers(1, 64),
)
def test_any_request_round_trips_however_the_stream_is_cut(
    stream_id: int,
    method: str,
    metadata: tuple[tuple[str, str | bytes], ...],
    timeout: float | None,
    payload: bytes,
    cut: int,
) -> None:
    """Whatever the fields, and wherever TCP splits the bytes, the server reads the request sent."""
    data = encode_request(stream_id, method, metadata, timeout, payload) + encode_cancel(stream_id)
    reader = FrameReader()
    frames = [f for i in range(0, len(data), cut) for f in reader.feed(data[i : i + cut])]
    assert [(f.stream_id, f.kind) for f in frames] == [(stream_id, REQUEST), (stream_id, CANCEL)]
    assert isinstance(frames[0], Frame)
    assert decode_request(frames[0].body) == Request(method, metadata, timeout, payload)


def test_frames_split_one_byte_at_a_time_come_out_whole_and_in_order() -> None:
    data = encode_response(1, (), b"one") + encode_status(2, 13, "x", ()) + encode_cancel(3)
    reader = FrameReader()
    frames = [f for i in range(len(data)) for f in reader.feed(data[i : i + 1])]
    assert [(f.stream_id, f.kind) for f in frames] == [(1, RESPONSE), (2, STATUS), (3, CANCEL)]


# -- malformed bodies ------------------------------------------------------------------------------


def request_body() -> bytes:
    return only_frame(encode_request(1, "/a.v1.A/B", (("k", "v"),), 1.0, b"xyz")).body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x00" * 5, "request head is cut short"),
        (struct.pack("!dHH", 1.0, 40, 0) + b"/a", "method path is cut short"),
        (struct.pack("!dHH", 1.0, 0, 1) + b"\x00\x01", "metadata pair header is cut short"),
        (
            struct.pack("!dHH", 1.0, 0, 1) + struct.pack("!HBI", 1, 0, 50) + b"kv",
            "metadata pair is cut short",
        ),
        (
            struct.pack("!dHH", 1.0, 0, 1) + struct.pack("!HBI", 1, 7, 1) + b"kv",
            "unknown metadata value kind 7",
        ),
        (struct.pack("!dHH", 1.0, 2, 0) + b"\xff\xfe", "not UTF-8"),
        (struct.pack("!dHH", float("nan"), 0, 0), "not a number of seconds"),
        (struct.pack("!dHH", float("inf"), 0, 0), "not a number of seconds"),
    ],
)
def test_a_malformed_request_body_is_refused_with_its_reason(body: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_request(body)


def test_every_truncation_of_a_request_body_is_refused_or_reads_a_shorter_payload() -> None:
    """The payload is the rest of the body, so cutting into it cannot be seen; cutting anything
    before it must be refused, never read past the body's end."""
    body = request_body()
    payload_at = len(body) - 3
    for end in range(payload_at):
        with pytest.raises(FrameError):
            decode_request(body[:end])
    assert decode_request(body[: payload_at + 1]).payload == b"x"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x05", "status head is cut short"),
        (struct.pack("!BIH", 0, 0, 0), "cannot carry OK"),
        (struct.pack("!BIH", 5, 10, 0) + b"short", "status details are cut short"),
        (struct.pack("!BIH", 5, 0, 0) + b"extra", "5 bytes after its metadata"),
        (
            struct.pack("!BIH", 5, 0, 2) + struct.pack("!HBI", 1, 1, 1) + b"kv",
            "metadata pair header is cut short",
        ),
    ],
)
def test_a_malformed_status_body_is_refused_with_its_reason(body: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_status(body)


def test_a_malformed_response_body_is_refused() -> None:
    with pytest.raises(FrameError, match="response head is cut short"):
        decode_response(b"\x00")
    with pytest.raises(FrameError, match="metadata pair header is cut short"):
        decode_response(struct.pack("!H", 1))


def test_an_unknown_frame_kind_is_refused_by_the_reader() -> None:
    with pytest.raises(FrameError, match="unknown frame kind 11 on stream 4"):
        FrameReader().feed(HEADER.pack(0, 4, 11))


def test_a_metadata_key_too_long_for_its_length_field_cannot_be_framed() -> None:
    with pytest.raises(FrameError, match="request cannot be framed"):
        encode_request(1, "/a.v1.A/B", (("k" * 70_000, "v"),), None, b"")


# -- the size cap ----------------------------------------------------------------------------------


def test_a_frame_past_the_cap_is_reported_and_skipped_and_the_next_frame_still_reads() -> None:
    big = encode_request(5, "/a.v1.A/B", (), None, b"x" * 1000)
    reader = FrameReader(max_body=100)
    frames = reader.feed(big + encode_cancel(6))
    assert frames == [Oversized(5, REQUEST, len(big) - HEADER.size), Frame(6, CANCEL, b"")]


def test_an_oversized_frame_arriving_in_pieces_is_skipped_without_being_buffered() -> None:
    big = encode_response(5, (), b"x" * 1000)
    after = encode_response(6, (), b"ok")
    reader = FrameReader(max_body=100)
    seen: list[Frame | Oversized] = []
    for i in range(0, len(big) + len(after), 64):
        seen += reader.feed((big + after)[i : i + 64])
        assert len(reader._buffer) < 100 + HEADER.size  # never holds the big frame's body
    assert seen == [
        Oversized(5, RESPONSE, len(big) - HEADER.size),
        Frame(6, RESPONSE, b"\x00\x00ok"),
    ]


def test_a_frame_exactly_at_the_cap_is_read() -> None:
    frame = encode_response(1, (), b"x" * 98)  # 2 bytes of head + 98 = 100
    assert FrameReader(max_body=100).feed(frame) == [Frame(1, RESPONSE, b"\x00\x00" + b"x" * 98)]


def test_the_size_message_names_the_size_and_the_limit() -> None:
    assert too_large("request frame", 5000, 4096) == (
        "lane request frame of 5000 bytes is larger than the limit of 4096 bytes"
    )
