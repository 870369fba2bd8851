"""The ports a command will listen on: checked before anything starts, and held until it exits.

Checked first, because past that point the bind fails deep inside grpc or the HTTP server with a
traceback (or grpc's own log line) that names neither the address nor the setting that moves it.

Held, because ``modrpc up`` starts its workers (each with ports the system picks, and outgoing
connections) before the gateway listens: a port the system hands out meanwhile could be the
gateway's own. A socket bound to the port, with ``SO_REUSEADDR`` and never listening, keeps the
system from handing it out, and still lets the real server bind and listen there (grpc and the
admin server both set ``SO_REUSEADDR``); it is closed when the command exits.
"""

from __future__ import annotations

import contextlib
import errno
import socket

from runtime.config import Settings

__all__ = ["PortInUse", "hold_ports", "in_use"]


class PortInUse(Exception):
    """A port the command would listen on has a listener already; the message names its setting."""


def _hold(host: str, port: int) -> socket.socket | None:
    """A socket holding ``host:port`` (None for port 0); ``OSError`` EADDRINUSE when a listener has it."""
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As the servers bind: connections closed a moment ago (TIME_WAIT) do not hold the port,
        # only a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port`` (port 0 never is)."""
    try:
        held = _hold(host, port)
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE
    if held is not None:
        held.close()
    return False


def _wanted(command: str, settings: Settings, worker_port: int | None) -> list[tuple[int, str]]:
    wanted: list[tuple[int, str]] = []
    if command in ("up", "gateway"):
        wanted.append((settings.gateway_port, "the gateway port: move it with --port N, MODRPC_GATEWAY_PORT or gateway_port in modrpc.toml"))
        wanted.append((settings.admin_port, "admin_port (the gateway's /metrics server): move it with MODRPC_ADMIN_PORT or admin_port in modrpc.toml, 0 turns it off"))
    if command == "worker" and worker_port:
        wanted.append((worker_port, "the worker port: move it with --port N (0 picks a free one)"))
    return wanted


def hold_ports(command: str, settings: Settings, worker_port: int | None = None) -> contextlib.ExitStack:
    """Hold every port ``command`` will listen on until the returned stack closes.

    Raises :class:`PortInUse`, naming the address and the setting that moves it, when one is taken.
    """
    host = settings.host
    stack = contextlib.ExitStack()
    try:
        for port, setting in _wanted(command, settings, worker_port):
            try:
                held = _hold(host, port)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise PortInUse(f"{host}:{port} is already in use; it is {setting}") from None
            if held is not None:
                stack.callback(held.close)
    except BaseException:
        stack.close()
        raise
    return stack
