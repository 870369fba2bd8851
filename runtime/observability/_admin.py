"""The admin HTTP port: Prometheus ``/metrics`` and ``/healthz``.

A small threaded ``http.server`` rather than an asyncio one: a scrape must be answered even when
the event loop is busy, and the server then needs no loop to start or stop.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from runtime.observability._metrics import Metrics

__all__ = ["AdminServer", "start_admin_server"]

_POLL_SECONDS = 0.05  # how long close() may wait for the serving thread to notice


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class AdminServer:
    """A running admin server. ``port`` is the bound port (useful when started on port 0)."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._closed = False
        address = server.server_address
        self.host: str = str(address[0])
        self.port: int = int(address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> AdminServer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def start_admin_server(
    host: str,
    port: int,
    *,
    metrics: Metrics | None = None,
    health: Callable[[], bool] | None = None,
) -> AdminServer:
    """Serve ``/metrics`` from ``metrics`` (the global prometheus registry if ``None``) and
    ``/healthz`` (200 when ``health()`` is true or not given, else 503) on ``host:port``.

        >>> with start_admin_server("127.0.0.1", 0) as admin:
        ...     admin.port > 0
        True
    """
    registry = metrics.registry if metrics is not None else REGISTRY
    handler = _handler_class(registry, health)
    server_class = _Server6 if ":" in host else _Server
    server = server_class((host, port), handler)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": _POLL_SECONDS},
        name=f"modrpc-admin-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return AdminServer(server, thread)


def _handler_class(
    registry: CollectorRegistry, health: Callable[[], bool] | None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif path == "/healthz":
                healthy = _healthy(health)
                self._send(
                    200 if healthy else 503,
                    "text/plain; charset=utf-8",
                    b"ok\n" if healthy else b"unhealthy\n",
                )
            else:
                self._send(
                    404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n"
                )

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Scrapes every few seconds would drown the real logs.
            pass

    return Handler


def _healthy(health: Callable[[], bool] | None) -> bool:
    if health is None:
        return True
    try:
        return bool(health())
    except Exception:
        return False
