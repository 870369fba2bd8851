"""This process's TCP sockets, found among its open descriptors (Linux: ``/proc/self/fd``).

grpc's Python server owns its sockets and offers no handle on them; the limits that grpc does
not enforce itself (closing a rapid-reset connection, banning its address) reach them here.
Each socket is a duplicate of grpc's descriptor: closing it leaves grpc's open.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

__all__ = ["FD_DIR", "ip_address", "listening_sockets", "peer_address", "tcp_sockets"]

FD_DIR = Path("/proc/self/fd")


def ip_address(value: str | bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address from its text or packed bytes, an IPv4-mapped IPv6 one as the IPv4 it is."""
    address = ipaddress.ip_address(value)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def peer_address(peer: str) -> tuple[str, int] | None:
    """The host and port a gRPC peer string names (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``; grpc
    writes the brackets escaped, ``ipv6:%5B::1%5D:5``), if it names them.

        >>> peer_address("ipv4:127.0.0.1:5"), peer_address("ipv6:%5B::1%5D:5"), peer_address("unix:/run/x")
        (('127.0.0.1', 5), ('::1', 5), None)
    """
    kind, _, rest = unquote(peer).partition(":")
    host, _, port = rest.rpartition(":")
    if kind not in ("ipv4", "ipv6") or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def tcp_sockets() -> Iterator[socket.socket]:
    """A duplicate of each of this process's TCP sockets (IPv4 and IPv6), to use and close
    before the next is asked for; none where ``/proc/self/fd`` cannot be read."""
    try:
        names = os.listdir(FD_DIR)
    except OSError:
        return
    for name in names:
        try:
            if not os.readlink(FD_DIR / name).startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):
            continue  # closed meanwhile, or not a socket this process may use
        with sock:
            if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6):
                yield sock


def listening_sockets(port: int) -> Iterator[socket.socket]:
    """This process's TCP sockets listening on ``port`` (grpc may have one per address family)."""
    for sock in tcp_sockets():
        with contextlib.suppress(OSError):
            if sock.getsockname()[1] == port and sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN
            ):
                yield sock
