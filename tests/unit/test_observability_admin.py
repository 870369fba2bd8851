"""The admin port on uvicorn: its bounds hold against real misbehaving clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from runtime.config import LimitsSettings
from runtime.limits import admin_limits
from runtime.observability import AdminServer, Metrics, start_admin_server


@pytest.fixture
def admin() -> Iterator[AdminServer]:
    """An admin server bounded by ``[limits]`` settings, as the gateway and workers build theirs."""
    metrics = Metrics("admin-test")
    limits = LimitsSettings(
        admin_max_connections=4, admin_keep_alive=1, admin_max_head_bytes=4096, admin_head_timeout=0.5
    )
    server = start_admin_server("127.0.0.1", 0, metrics=metrics, limits=admin_limits(limits))
    yield server
    server.close()
    metrics.close()


def raw(admin: AdminServer, data: bytes, *, read_for: float = 3.0) -> bytes:
    with socket.create_connection(("127.0.0.1", admin.port), timeout=read_for) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_a_request_head_growing_past_the_bound_is_refused(admin: AdminServer) -> None:
    """Bytes of a head not yet complete are what the bound limits: memory a client can pin."""
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192
    assert raw(admin, head).startswith(b"HTTP/1.1 400")


def test_a_complete_request_head_over_the_bound_is_refused(admin: AdminServer) -> None:
    """A head that arrives whole in one read is past h11's incomplete-head bound; it is still
    refused, 431, naming both sizes, and the port goes on serving."""
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 6000 + b"\r\n\r\n"
    answer = raw(admin, head)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"over this port's 4096" in answer
    assert raw(admin, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200")


def test_a_connection_that_never_finishes_its_head_is_closed(admin: AdminServer) -> None:
    """Slow loris: a byte now and then never completes a request; the head timeout ends it."""
    with socket.create_connection(("127.0.0.1", admin.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        closed = False
        while time.monotonic() - started < 4:
            try:
                sock.sendall(b"X")
                if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                    closed = True
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed = True
                break
            time.sleep(0.1)
    assert closed, "the connection was still open after 4 s of an unfinished head"
    assert time.monotonic() - started < 3


def test_an_idle_connection_is_closed_and_an_answered_one_too_after_keep_alive(admin: AdminServer) -> None:
    with socket.create_connection(("127.0.0.1", admin.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b"ok\n"):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server, not by our timeout
        assert time.monotonic() - started < 3


def test_calls_beyond_the_concurrency_bound_get_503_and_the_port_recovers(admin: AdminServer) -> None:
    release = threading.Event()

    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.to_thread(release.wait, 10)
        return PlainTextResponse("done")

    admin.mount("/slow", Starlette(routes=[Route("/", slow)]))
    socks = []
    try:
        # Three calls in progress hold three connections; the fourth reaches the bound of 4.
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", admin.port), timeout=5)
            s.sendall(b"GET /slow/ HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        time.sleep(0.3)
        answer = raw(admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", read_for=2)
        assert answer.startswith(b"HTTP/1.1 503"), answer
    finally:
        release.set()
        for s in socks:
            s.close()
    time.sleep(0.3)
    with urllib.request.urlopen(f"{admin.url}/metrics", timeout=5) as response:
        assert response.status == 200


def test_metrics_keep_the_prometheus_content_type(admin: AdminServer) -> None:
    with urllib.request.urlopen(f"{admin.url}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
