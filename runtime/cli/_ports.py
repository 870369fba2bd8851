"""A port already taken is one line naming the address and the setting that moves it.

Checked before anything starts, because past that point the bind fails deep inside grpc or the
HTTP server with a traceback (or grpc's own log line) that names neither.
"""

from __future__ import annotations

import errno
import socket

from runtime.config import Settings

__all__ = ["busy_port_message", "in_use"]


def in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port`` (port 0 never is)."""
    if port == 0:
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the servers bind: connections they closed a moment ago (TIME_WAIT) do not hold
        # the port, only a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def busy_port_message(command: str, settings: Settings, worker_port: int | None = None) -> str | None:
    """The line to print when a port ``command`` would listen on is taken; None when all are free."""
    host = settings.host
    wanted: list[tuple[int, str]] = []
    if command in ("up", "gateway"):
        wanted.append((settings.gateway_port, "the gateway port: move it with --port N, MODRPC_GATEWAY_PORT or gateway_port in modrpc.toml"))
        wanted.append((settings.admin_port, "admin_port (the gateway's /metrics server): move it with MODRPC_ADMIN_PORT or admin_port in modrpc.toml, 0 turns it off"))
    if command == "worker" and worker_port:
        wanted.append((worker_port, "the worker port: move it with --port N (0 picks a free one)"))
    for port, setting in wanted:
        if in_use(host, port):
            return f"{host}:{port} is already in use; it is {setting}"
    return None
