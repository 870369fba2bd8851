"""The rapid-reset guard's rule and how it closes one connection; the connection budget."""

from __future__ import annotations

import socket

import hyperframe.frame
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.config import LimitsSettings
from runtime.limits import _server as limits_server
from runtime.limits import grpc_server_limits
from runtime.limits._resets import (
    ENHANCE_YOUR_CALM,
    RAPID_RESET_GOAWAY,
    close_connection,
    goaway_frame,
    is_rapid_reset,
)
from runtime.limits._server import connection_budget


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 1_000))
def test_only_a_connection_resetting_most_of_many_streams_is_a_rapid_reset(
    started: int, reset: int, max_reset_streams: int
) -> None:
    reset = min(reset, started)
    verdict = is_rapid_reset(started, reset, max_reset_streams)
    assert verdict == (reset >= max_reset_streams and reset * 2 >= started)
    if verdict:  # more resets, or fewer streams that went well, never clears it
        assert is_rapid_reset(started + 1, reset + 1, max_reset_streams)


def test_the_guard_closes_exactly_the_connection_it_names() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        named = socket.create_connection(("127.0.0.1", port))
        other = socket.create_connection(("127.0.0.1", port))
        served_named, _ = listener.accept()
        served_other, _ = listener.accept()
        try:
            assert close_connection(port, "127.0.0.1", named.getsockname()[1])
            named.settimeout(2)
            assert named.recv(1) == b"", "the named client sees its connection end"
            other.settimeout(0.2)
            served_other.sendall(b"x")
            assert other.recv(1) == b"x", "the other connection is untouched"
            assert not close_connection(port, "127.0.0.1", 1), "no such connection"
        finally:
            for sock in (named, other, served_named, served_other):
                sock.close()


def test_the_goaway_is_a_well_formed_http2_frame() -> None:
    """Read back by an HTTP/2 library: the connection's stream 0, the highest last stream id."""
    frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(RAPID_RESET_GOAWAY[:9]))
    frame.parse_body(memoryview(RAPID_RESET_GOAWAY[9:]))
    assert isinstance(frame, hyperframe.frame.GoAwayFrame) and length == len(RAPID_RESET_GOAWAY) - 9
    assert (frame.stream_id, frame.last_stream_id, frame.error_code) == (0, 2**31 - 1, ENHANCE_YOUR_CALM)
    assert frame.additional_data == b"rapid_reset"
    bare, bare_length = hyperframe.frame.Frame.parse_frame_header(memoryview(goaway_frame(0)[:9]))
    assert isinstance(bare, hyperframe.frame.GoAwayFrame) and bare_length == 8


def test_a_plaintext_connection_is_told_goaway_before_it_is_closed() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        try:
            assert close_connection(port, "127.0.0.1", client.getsockname()[1], goaway=RAPID_RESET_GOAWAY)
            client.settimeout(2)
            received = b""
            while chunk := client.recv(1 << 16):
                received += chunk
            assert received == RAPID_RESET_GOAWAY, "the frame, then the end of the connection"
        finally:
            client.close()
            served.close()


def test_connections_stay_within_the_open_file_limit(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """``max_connections`` past what the open-file limit leaves (after ``reserved_files``) is
    lowered, shared among the process's servers, and the lowering is logged."""
    monkeypatch.setattr(limits_server, "open_file_limit", lambda: 1024)
    limits = LimitsSettings(max_connections=1000, reserved_files=256)
    with caplog.at_level("WARNING", logger="modrpc.limits"):
        assert connection_budget(limits) == 768
        assert connection_budget(limits, servers=2) == 384
    assert "ulimit -Hn" in caplog.text
    built = dict(grpc_server_limits(limits, 4 << 20, servers=2).options)
    assert built["grpc.max_allowed_incoming_connections"] == 384
    assert connection_budget(LimitsSettings(max_connections=100)) == 100
