"""Rapid reset: a connection that resets most of the streams it opens is closed.

A client can open a stream and reset it at once, in a loop (CVE-2023-44487). grpc core refuses
streams past ``max_concurrent_streams`` (streams still being torn down count), so one such
connection never cancels anyone else's calls; but every stream it gets in costs the server's
event loop a call set up and torn down, and grpc's Python server offers no per-connection reset
budget nor any way to close one connection.

:class:`ResetGuard` adds the budget, the way Envoy's ``premature_reset_total_stream_count`` does:
a connection that has opened at least ``max_reset_streams`` streams and had at least half of
them reset before the server answered is closed. It reads grpc's own per-connection counters
(channelz: ``streams_started``, ``streams_failed``, which counts exactly the streams that ended
before the server sent their end), so the calls themselves pay nothing:

- every ``interval`` it reads one number, ``resets()``: how many calls were reset (the gateway
  counts calls routed but never taken up, because their request never came, and calls their
  caller cancelled); only when it grew by
  ``max_reset_streams`` since the last scan does it read each connection's counters, and a scan
  that takes long spaces the next looks out (at most a tenth of one core is spent on them);
- the connection is closed by shutting its socket down (found by its two addresses among the
  process's descriptors); grpc sees the end of the stream and tears the transport down. grpc
  offers no way to send one connection a GOAWAY, so on a plaintext connection the guard writes
  it itself, ahead of the shutdown: ``ENHANCE_YOUR_CALM`` with the debug data ``rapid_reset``
  (as grpc's own ``too_many_pings``), and only while the kernel has put everything grpc wrote
  on the wire (``SIOCOUTQNSD`` 0): grpc writes a frame in one piece unless the socket's buffer
  is full, so the GOAWAY does not land inside one of grpc's frames. The last stream id
  is the highest possible: which of its streams grpc took up is not known from outside, so the
  client must not take any of them for unprocessed. On a TLS connection, or a full socket (a
  client that does not read), the client sees the connection end without it;
- with ``bans`` (:class:`~runtime.limits._bans.AddressBans`), the client's address is then
  refused new connections for a while, in the kernel: closing a connection alone lets the
  client connect again at once, for the price of a TCP handshake, with a fresh budget.

Linux only (``/proc/self/fd``); elsewhere the guard logs once that it cannot close connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_channelz.v1 import channelz_pb2
from grpc_channelz.v1._servicer import ChannelzServicer  # the public servicer's lookups

from runtime.limits._bans import AddressBans
from runtime.limits._sockets import FD_DIR, ip_address, tcp_sockets

__all__ = ["Offender", "ResetGuard", "close_connection", "goaway_frame", "is_rapid_reset"]

log = logging.getLogger("modrpc.limits")

MAX_SHARE = 0.1
"""The largest share of one core the guard's looks may take: a look that took ``t`` seconds is
followed by at least ``t / MAX_SHARE`` seconds before the next."""

def is_rapid_reset(started: int, reset: int, max_reset_streams: int) -> bool:
    """Whether a connection that opened ``started`` streams, ``reset`` of them ended by the
    client before the server answered, is resetting them in a loop: at least
    ``max_reset_streams`` resets, and at least half of what it opened.

        >>> is_rapid_reset(started=1000, reset=990, max_reset_streams=200)
        True
        >>> is_rapid_reset(started=1000, reset=300, max_reset_streams=200)  # a client that cancels often
        False
        >>> is_rapid_reset(started=150, reset=150, max_reset_streams=200)
        False
    """
    return reset >= max_reset_streams and 2 * reset >= started


@dataclass(frozen=True, slots=True)
class Offender:
    """A connection the guard closed."""

    address: str
    """The client's ``host:port``."""
    started: int
    reset: int
    closed: bool
    """Whether its socket was found and shut down."""
    banned_for: float = 0.0
    """Seconds for which its address may not connect again (0: not banned)."""


_Reply = TypeVar("_Reply")


def _ask(lookup: Callable[[Any, Any], _Reply], request: object) -> _Reply | None:
    """One of :class:`ChannelzServicer`'s lookups, called directly (no server): None when what
    was asked for is gone (it reports that on the context instead of raising)."""
    context = _Context()
    reply = lookup(request, context)
    return None if context.code is not None else reply


class _Context:
    """What the lookups need of a context: they report a failure on it."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


ENHANCE_YOUR_CALM = 0xB
"""The HTTP/2 error code of a GOAWAY for a peer that generates excessive load (RFC 9113 §7)."""

_GOAWAY_TYPE = 0x7
_LAST_STREAM_ID = 0x7FFF_FFFF


def goaway_frame(error_code: int, debug: bytes = b"") -> bytes:
    """An HTTP/2 GOAWAY frame (RFC 9113 §6.8) on the connection's stream 0, naming the highest
    stream id there can be as the last one processed.

        >>> goaway_frame(ENHANCE_YOUR_CALM, b"rapid_reset").hex(" ")
        '00 00 13 07 00 00 00 00 00 7f ff ff ff 00 00 00 0b 72 61 70 69 64 5f 72 65 73 65 74'
    """
    payload = struct.pack("!II", _LAST_STREAM_ID, error_code) + debug
    return struct.pack("!I", len(payload))[1:] + struct.pack("!BBI", _GOAWAY_TYPE, 0, 0) + payload


RAPID_RESET_GOAWAY = goaway_frame(ENHANCE_YOUR_CALM, b"rapid_reset")


_SIOCOUTQNSD = 0x894B
"""Linux's ioctl for the bytes of a TCP socket's send queue not yet sent (``linux/sockios.h``)."""


def _unsent(sock: socket.socket) -> int:
    """Bytes written to ``sock`` that the kernel has not put on the wire yet (-1: unknown)."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQNSD, b"\0\0\0\0"))[0])
    except OSError:
        return -1


def _say_goaway(sock: socket.socket, frame: bytes) -> bool:
    """Write ``frame`` on ``sock`` if nothing else is waiting to be sent on it; whether it was."""
    if _unsent(sock) != 0:
        return False  # grpc may be midway through a frame of its own
    try:
        return sock.send(frame, socket.MSG_DONTWAIT) == len(frame)
    except OSError:
        return False


def close_connection(local_port: int, remote_ip: str, remote_port: int, *, goaway: bytes = b"") -> bool:
    """Shut down this process's TCP connection from ``remote_ip:remote_port`` to
    ``local_port``: whoever owns the descriptor (grpc) sees it end. Whether it was found.

    ``goaway``: a GOAWAY frame to write first (plaintext HTTP/2 only), when the socket has
    nothing else waiting to be sent."""
    for sock in tcp_sockets():
        try:
            peer, local = sock.getpeername(), sock.getsockname()
        except OSError:
            continue  # a listening or unconnected socket
        if local[1] == local_port and peer[1] == remote_port and ip_address(peer[0]) == ip_address(remote_ip):
            if goaway:
                _say_goaway(sock, goaway)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            return True
    return False


class ResetGuard:
    """Watches one gRPC server's connections and closes those resetting streams in a loop.

    ``port``: the server's bound port (it tells this server from others of the process).
    ``on_close`` hears of every connection closed (the gateway counts them in its metrics).
    Run :meth:`run` as a task for as long as the server serves; :meth:`look` is one look.
    """

    def __init__(
        self,
        port: int,
        *,
        max_reset_streams: int,
        interval: float,
        resets: Callable[[], int],
        on_close: Callable[[Offender], None] | None = None,
        bans: AddressBans | None = None,
    ) -> None:
        self.port = port
        self.max_reset_streams = max_reset_streams
        self.interval = interval
        self._resets = resets
        self._on_close = on_close
        self._bans = bans
        self._server_id: int | None = None
        self._resets_at_last_scan: int | None = None
        self._closed: set[int] = set()
        """Socket ids already closed (grpc may list them until its teardown ends)."""
        self._unsupported = not FD_DIR.is_dir()

    async def run(self) -> None:
        if self._unsupported:
            log.warning("rapid-reset guard off: this platform has no /proc/self/fd to find connections in")
            return
        while True:
            started = time.perf_counter()
            try:
                self.look()
            except Exception as exc:  # a look failing must never take the server down
                log.warning("rapid-reset guard: could not read grpc's connection counters: %s", exc)
            if self._bans is not None:
                self._apply_bans()  # bans that ended are lifted
            spent = time.perf_counter() - started
            await asyncio.sleep(max(self.interval, spent / MAX_SHARE))

    def look(self) -> list[Offender]:
        """One look: the connections closed by it. Each connection's counters are read only
        once the server's resets have grown by ``max_reset_streams`` since they last were."""
        resets = self._resets()
        if self._resets_at_last_scan is None:
            self._resets_at_last_scan = resets
        if resets - self._resets_at_last_scan < self.max_reset_streams:
            return []
        self._resets_at_last_scan = resets
        server_id = self._server_id or self._find_server()
        return [] if server_id is None else self._scan(server_id)

    def _scan(self, server_id: int) -> list[Offender]:
        found: list[tuple[channelz_pb2.Socket, str]] = []
        listed: set[int] = set()
        for ref in self._sockets(server_id):
            listed.add(ref.socket_id)
            if ref.socket_id in self._closed:
                continue
            reply = _ask(ChannelzServicer.GetSocket, channelz_pb2.GetSocketRequest(socket_id=ref.socket_id))
            if reply is None:
                continue  # closed meanwhile
            data = reply.socket.data
            if is_rapid_reset(data.streams_started, data.streams_failed, self.max_reset_streams):
                found.append((reply.socket, str(ip_address(reply.socket.remote.tcpip_address.ip_address))))
        self._closed &= listed
        # The bans are in force before any offender hears of its close: a client that connects
        # again the moment it reads the GOAWAY finds its address refused already.
        bans = {ip: self._bans.ban(ip) for _, ip in found} if self._bans is not None else {}
        if bans:
            self._apply_bans()
        return [self._close(sock, ip, bans.get(ip, 0.0)) for sock, ip in found]

    def _close(self, sock: channelz_pb2.Socket, ip: str, banned_for: float) -> Offender:
        remote, data = sock.remote.tcpip_address, sock.data
        plaintext = not sock.HasField("security")
        closed = close_connection(self.port, ip, remote.port, goaway=RAPID_RESET_GOAWAY if plaintext else b"")
        self._closed.add(sock.ref.socket_id)
        offender = Offender(f"{ip}:{remote.port}", data.streams_started, data.streams_failed, closed, banned_for)
        log.warning(
            "closed the connection from %s: it reset %d of the %d streams it opened "
            "(rapid reset; limits.max_reset_streams is %d)%s%s",
            offender.address, offender.reset, offender.started, self.max_reset_streams,
            "" if closed else " -- its socket was not found, so it stays open",
            f"; new connections from {self._bans.name(ip)} are refused for {banned_for:g} s (limits.reset_ban)"
            if self._bans is not None and banned_for else "",
        )  # fmt: skip
        if self._on_close is not None:
            self._on_close(offender)
        return offender

    def _apply_bans(self) -> None:
        """Put the bans in force (or lift those that ended); a failure is logged, never raised."""
        assert self._bans is not None
        try:
            if not self._bans.apply():
                log.warning("rapid-reset guard: found no socket listening on port %d to refuse banned addresses on", self.port)
        except Exception as exc:  # the guard's other work goes on
            log.warning("rapid-reset guard: could not put the address bans in force: %s", exc)

    def _sockets(self, server_id: int) -> list[channelz_pb2.SocketRef]:
        refs: list[channelz_pb2.SocketRef] = []
        start = 0
        while True:
            page = _ask(
                ChannelzServicer.GetServerSockets,
                channelz_pb2.GetServerSocketsRequest(server_id=server_id, start_socket_id=start),
            )
            if page is None:
                return refs
            refs.extend(page.socket_ref)
            if page.end or not page.socket_ref:
                return refs
            start = page.socket_ref[-1].socket_id + 1

    def _find_server(self) -> int | None:
        """The channelz id of the server on :attr:`port`: the one whose listener, or (bound to
        port 0, its listener reads 0) whose first connection, is on that port."""
        start = 0
        while True:
            page = _ask(ChannelzServicer.GetServers, channelz_pb2.GetServersRequest(start_server_id=start))
            if page is None:
                return None
            for server in page.server:
                if self._serves_port(server):
                    self._server_id = int(server.ref.server_id)
                    return self._server_id
            if page.end or not page.server:
                return None
            start = page.server[-1].ref.server_id + 1

    def _serves_port(self, server: channelz_pb2.Server) -> bool:
        refs = [*server.listen_socket]
        first = _ask(
            ChannelzServicer.GetServerSockets,
            channelz_pb2.GetServerSocketsRequest(server_id=server.ref.server_id, max_results=1),
        )
        if first is not None:
            refs.extend(first.socket_ref[:1])
        for ref in refs:
            found = _ask(ChannelzServicer.GetSocket, channelz_pb2.GetSocketRequest(socket_id=ref.socket_id))
            if found is not None and found.socket.local.tcpip_address.port == self.port:
                return True
        return False
