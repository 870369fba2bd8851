"""Rapid reset: a connection that resets most of the streams it opens is closed.

A client can open a stream and reset it at once, in a loop (CVE-2023-44487). grpc core refuses
streams past ``max_concurrent_streams`` (streams still being torn down count), so one such
connection never cancels anyone else's calls; but every stream it gets in costs the server's
event loop a call set up and torn down, and grpc's Python server offers no per-connection reset
budget nor any way to close one connection.

:class:`ResetGuard` adds the budget, the way Envoy's ``premature_reset_total_stream_count`` does:
a connection that has opened at least ``max_reset_streams`` streams and had at least half of
them reset before the server answered is closed. It reads grpc's own counters (channelz:
``streams_started``, ``streams_failed``, which counts exactly the streams that ended before the
server sent their end), so the calls themselves pay nothing:

- every ``interval`` it reads one number, the server's calls started and not answered OK (every
  method: routes, health, reflection and unknown ones alike); only when it grew by
  ``max_reset_streams`` since the last scan does it read each connection's counters, and a scan
  that takes long spaces the next looks out (at most a tenth of one core is spent on them);
- what each scan sees is also added up per client address over :data:`ADDRESS_WINDOW`: the
  streams its connections opened that sent no request message and were never answered
  (:attr:`_Seen.silent`), against those answered. A client that opens a fresh connection before
  each one reaches ``max_reset_streams`` is caught by its address's total (the same rule), and
  its connections still resetting are closed;
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
from runtime.limits._sockets import FD_DIR, ip_address, peer_address, tcp_sockets

__all__ = ["AnsweredStreams", "Offender", "ResetGuard", "close_connection", "goaway_frame", "is_rapid_reset"]

log = logging.getLogger("modrpc.limits")

MAX_SHARE = 0.1
"""The largest share of one core the guard's looks may take: a look that took ``t`` seconds is
followed by at least ``t / MAX_SHARE`` seconds before the next."""

ADDRESS_WINDOW = 10.0
"""Seconds over which the streams one client address opened and had reset, across all its
connections, are added up; an address's total starts over once that long has passed."""


PREMATURE = 1.0
"""Seconds within which a call its caller cancels counts as a reset (Envoy's
``premature_reset_min_stream_lifetime_seconds``): one cancelled later, or after it was answered,
is a caller changing its mind, not a stream opened to be reset."""


class AnsweredStreams:
    """Per connection, the calls their caller cancelled after they were answered or had run
    :data:`PREMATURE` seconds: channelz counts every stream the server did not end as failed
    (a watch the client closes, a call it gives up on after a second), and the guard takes
    these back out. Only the cancellation path adds to it; the guard forgets connections that
    are gone at each scan, and past :data:`MAX_ANSWERED` connections it starts over.

        >>> answered = AnsweredStreams()
        >>> answered.add("ipv4:127.0.0.3:50000"); answered.add("ipv6:%5B::1%5D:50001")
        >>> answered.of("127.0.0.3", 50000), answered.of("::1", 50001), answered.of("::1", 50000)
        (1, 1, 0)
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}

    def add(self, peer: str) -> None:
        """One more such call on the connection ``peer`` (grpc's ``context.peer()``)."""
        found = peer_address(peer)
        if found is None:
            return
        key = (str(ip_address(found[0])), found[1])
        if key not in self._counts and len(self._counts) >= MAX_ANSWERED:
            self._counts.clear()
        self._counts[key] = self._counts.get(key, 0) + 1

    def of(self, ip: str, port: int) -> int:
        return self._counts.get((ip, port), 0)

    def keep(self, connections: set[tuple[str, int]]) -> None:
        """Forget the connections not among ``connections`` (those still open)."""
        self._counts = {key: n for key, n in self._counts.items() if key in connections}


MAX_ANSWERED = 10_000
"""Connections :class:`AnsweredStreams` keeps counts for at most."""


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
class _Seen:
    """One connection's counters as a scan read them."""

    ip: str
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    received: int = 0
    """Request messages received, all streams together."""

    @property
    def silent(self) -> int:
        """Streams (at least) not answered OK that never sent a request message: what a stream
        opened to be reset is. A stream that sent its request (a watch, a call still running)
        is not one of them. grpc counts a reset stream as failed only once the server has taken
        its call up, long after the reset under a flood, so a connection that is gone counts
        all of these at once."""
        return max(0, min(self.started - self.succeeded, self.started - self.received))


@dataclass(slots=True)
class _Tally:
    """What one client address's connections did: streams never answered that never sent a
    request message (:attr:`_Seen.silent`), and streams answered."""

    since: float
    silent: int = 0
    answered: int = 0

    def add(self, silent: int, answered: int) -> None:
        self.silent += silent
        self.answered += answered

    def is_rapid_reset(self, max_reset_streams: int) -> bool:
        return is_rapid_reset(self.silent + self.answered, self.silent, max_reset_streams)


@dataclass(frozen=True, slots=True)
class Offender:
    """A connection the guard closed, or an address it banned for what its connections did
    together (``address`` the bare host, ``closed`` False)."""

    address: str
    """The client's ``host:port``, or its host alone."""
    started: int
    reset: int
    closed: bool
    """Whether its socket was found and shut down."""
    banned_for: float = 0.0
    """Seconds for which its address may not connect again (0: not banned)."""
    reason: str = "rapid_reset"
    """Why: ``rapid_reset``, or what :meth:`ResetGuard.refuse` was told (``flood``)."""


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
FLOOD_GOAWAY = goaway_frame(ENHANCE_YOUR_CALM, b"flood")


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


GOAWAY_GRACE = 0.1
"""Seconds between a GOAWAY and its connection's shutdown, so that the client reads it first: a
socket closed with unread bytes in it ends in a TCP reset, which throws away what the client had
not read yet."""


def close_connection(
    local_port: int, remote_ip: str, remote_port: int, *, goaway: bytes = b"", grace: float = 0.0
) -> bool:
    """Shut down this process's TCP connection from ``remote_ip:remote_port`` to
    ``local_port``: whoever owns the descriptor (grpc) sees it end. Whether it was found.

    ``goaway``: a GOAWAY frame to write first (plaintext HTTP/2 only), when the socket has
    nothing else waiting to be sent; then, within a running event loop, the shutdown comes
    ``grace`` seconds later."""
    for sock in tcp_sockets():
        try:
            peer, local = sock.getpeername(), sock.getsockname()
        except OSError:
            continue  # a listening or unconnected socket
        if local[1] == local_port and peer[1] == remote_port and ip_address(peer[0]) == ip_address(remote_ip):
            if goaway and _say_goaway(sock, goaway) and grace > 0:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    pass
                else:
                    loop.call_later(grace, _shut_down, sock.dup())
                    return True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            return True
    return False


def _shut_down(sock: socket.socket) -> None:
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


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
        running: int = 256,
        answered: AnsweredStreams | None = None,
        on_close: Callable[[Offender], None] | None = None,
        bans: AddressBans | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self.max_reset_streams = max_reset_streams
        self.interval = interval
        self.running = running
        """Calls the server runs at once (``maximum_concurrent_rpcs``)."""
        self._answered = answered or AnsweredStreams()
        self._on_close = on_close
        self._bans = bans
        self._clock = clock
        self._server_id: int | None = None
        self._unanswered_at_last_scan: int | None = None
        self._closed: set[int] = set()
        """Socket ids already closed (grpc may list them until its teardown ends)."""
        self._seen: dict[int, _Seen] = {}
        """What the last scan read of each connection it listed."""
        self._gone: dict[str, _Tally] = {}
        """Per client address, what its connections that closed in the last
        :data:`ADDRESS_WINDOW` left behind."""
        self._refused: dict[str, str] = {}
        """Addresses to ban and cut off at the next look (:meth:`refuse`), and why."""
        self._unsupported = not FD_DIR.is_dir()
        self._no_listener_said = False

    def refuse(self, ip: str, why: str) -> None:
        """Ban ``ip`` and close its connections at the next look, for what the server saw in
        its calls and grpc's counters do not show (an address flooding calls past their rate
        limit); ``why`` is said in the log line. An address exempt from bans is left alone, and
        one banned already is not banned again for calls it had sent before its ban."""
        if self._bans is None or not self._bans.holds(ip):
            self._refused.setdefault(ip, why)

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
        once the server's unanswered calls have grown by ``max_reset_streams`` since they last
        were."""
        server_id = self._server_id or self._find_server()
        if server_id is None:
            return []
        refused = self._cut_off_refused(server_id) if self._refused else []
        return refused + self._look(server_id)

    def _look(self, server_id: int) -> list[Offender]:
        reply = _ask(ChannelzServicer.GetServer, channelz_pb2.GetServerRequest(server_id=server_id))
        if reply is None:
            return []
        # The server's calls started and not (yet) answered OK, whatever their method: the cheap
        # sign, one lookup, that some client may be resetting streams.
        data = reply.server.data
        unanswered = data.calls_started - data.calls_succeeded
        if self._unanswered_at_last_scan is None:
            self._unanswered_at_last_scan = unanswered
        if unanswered - self._unanswered_at_last_scan < self.max_reset_streams:
            return []
        self._unanswered_at_last_scan = unanswered
        # Calls neither answered nor ended, past what the server runs at once: calls let in
        # faster than they are taken up, a backlog only a flood builds.
        flooded = unanswered - data.calls_failed > 2 * self.running
        return self._scan(server_id, flooded)

    def _scan(self, server_id: int, flooded: bool) -> list[Offender]:
        now = self._clock()
        self._gone = {ip: tally for ip, tally in self._gone.items() if now - tally.since <= ADDRESS_WINDOW}
        looked: list[tuple[channelz_pb2.Socket, _Seen]] = []
        listed: set[int] = set()
        for ref in self._sockets(server_id):
            listed.add(ref.socket_id)
            if ref.socket_id in self._closed:
                continue
            reply = _ask(ChannelzServicer.GetSocket, channelz_pb2.GetSocketRequest(socket_id=ref.socket_id))
            if reply is None:
                continue  # closed meanwhile
            data = reply.socket.data
            ip = str(ip_address(reply.socket.remote.tcpip_address.ip_address))
            answered = self._answered.of(ip, reply.socket.remote.tcpip_address.port)
            succeeded, failed = data.streams_succeeded + answered, max(0, data.streams_failed - answered)
            looked.append((reply.socket, _Seen(ip, data.streams_started, succeeded, failed, data.messages_received)))
        self._answered.keep({(c.ip, sock.remote.tcpip_address.port) for sock, c in looked})
        seen = {sock.ref.socket_id: counted for sock, counted in looked}
        for socket_id, last in self._seen.items():
            if socket_id not in seen and socket_id not in self._closed:
                # Gone since the last scan: its streams count as they were then.
                self._gone.setdefault(last.ip, _Tally(now)).add(last.silent, last.succeeded)
        self._seen = seen
        self._closed &= listed
        totals = {ip: _Tally(now, tally.silent, tally.answered) for ip, tally in self._gone.items()}
        for _, counted in looked:
            # An open connection's silent streams count once they have ended: until then they
            # may be streams its client has opened and not written to yet. Under a flood, grpc
            # counts a reset stream as ended only seconds later: then they count at once.
            silent = counted.silent if flooded else min(counted.silent, counted.failed)
            totals.setdefault(counted.ip, _Tally(now)).add(silent, counted.succeeded)
        caught = {ip: tally for ip, tally in totals.items() if tally.is_rapid_reset(self.max_reset_streams)}
        alone, along = [], []
        for sock, c in looked:
            if is_rapid_reset(c.started, c.failed, self.max_reset_streams):
                alone.append((sock, c))
            elif c.ip in caught and c.failed and c.silent > c.succeeded:
                along.append((sock, c))
        offenders = caught.keys() | {c.ip for _, c in alone}
        # The bans are in force before any offender hears of its close: a client that connects
        # again the moment it reads the GOAWAY finds its address refused already.
        bans = {ip: self._bans.ban(ip) for ip in offenders} if self._bans is not None else {}
        if bans:
            self._apply_bans()
        closed: list[Offender] = []
        for sock, counted in alone:
            ip = counted.ip
            offender = self._close(sock, counted, bans.pop(ip, 0.0))
            log.warning(
                "closed the connection from %s: it reset %d of the %d streams it opened "
                "(rapid reset; limits.max_reset_streams is %d)%s%s",
                offender.address, offender.reset, offender.started, self.max_reset_streams,
                "" if offender.closed else " -- its socket was not found, so it stays open",
                self._refusal(ip, offender.banned_for),
            )  # fmt: skip
            closed.append(offender)
        for ip, tally in caught.items():
            # Connections the client has closed itself may still be listed while grpc tears
            # them down: only those still open are closed and counted.
            shut = [o for o in (self._close(sock, c, 0.0) for sock, c in along if c.ip == ip) if o.closed]
            banned_for = bans.pop(ip, 0.0)
            log.warning(
                "rapid reset from %s across connections: they opened %d streams that sent nothing and "
                "were never answered, and had %d answered (limits.max_reset_streams is %d); "
                "closed the %d of them still open%s",
                ip, tally.silent, tally.answered, self.max_reset_streams, len(shut), self._refusal(ip, banned_for),
            )  # fmt: skip
            closed.extend(shut)
            if banned_for:
                closed.append(Offender(ip, tally.silent + tally.answered, tally.silent, False, banned_for))
            self._gone.pop(ip, None)  # dealt with: its count starts over
        if self._on_close is not None:
            for offender in closed:
                self._on_close(offender)
        return closed

    def _cut_off_refused(self, server_id: int) -> list[Offender]:
        """Ban the addresses :meth:`refuse` was told of and close their connections."""
        refused, self._refused = self._refused, {}
        bans = {ip: self._bans.ban(ip) for ip in refused} if self._bans is not None else {}
        if any(bans.values()):
            self._apply_bans()
        # An exempt address (a proxy standing for many clients) keeps its connections.
        cut = {ip for ip in refused if bans.get(ip, 1.0)}
        closed: list[Offender] = []
        for ref in self._sockets(server_id) if cut else ():
            if ref.socket_id in self._closed:
                continue
            reply = _ask(ChannelzServicer.GetSocket, channelz_pb2.GetSocketRequest(socket_id=ref.socket_id))
            if reply is None:
                continue
            ip = str(ip_address(reply.socket.remote.tcpip_address.ip_address))
            if ip in cut:
                data = reply.socket.data
                counted = _Seen(ip, data.streams_started, data.streams_succeeded, data.streams_failed, data.messages_received)
                closed.append(self._close(reply.socket, counted, 0.0, reason="flood"))
        for ip in cut:
            banned_for = bans.get(ip, 0.0)
            shut = sum(1 for offender in closed if offender.address.rpartition(":")[0] == ip and offender.closed)
            log.warning(
                "%s: %s; closed %d of its connections%s",
                ip, refused[ip], shut, self._refusal(ip, banned_for),
            )  # fmt: skip
            if banned_for:
                closed.append(Offender(ip, 0, 0, False, banned_for, reason="flood"))
        if self._on_close is not None:
            for offender in closed:
                self._on_close(offender)
        return closed

    def _close(self, sock: channelz_pb2.Socket, counted: _Seen, banned_for: float, reason: str = "rapid_reset") -> Offender:
        port = sock.remote.tcpip_address.port
        plaintext = not sock.HasField("security")
        goaway = (FLOOD_GOAWAY if reason == "flood" else RAPID_RESET_GOAWAY) if plaintext else b""
        shut = close_connection(self.port, counted.ip, port, goaway=goaway, grace=GOAWAY_GRACE)
        self._closed.add(sock.ref.socket_id)
        return Offender(f"{counted.ip}:{port}", counted.started, counted.failed, shut, banned_for, reason)

    def _refusal(self, ip: str, banned_for: float) -> str:
        if self._bans is None or not banned_for:
            return ""
        return f"; new connections from {self._bans.name(ip)} are refused for {banned_for:g} s (limits.reset_ban)"

    def _apply_bans(self) -> None:
        """Put the bans in force (or lift those that ended); a failure is logged, never raised."""
        assert self._bans is not None
        try:
            found = self._bans.apply()
            if not found and not self._no_listener_said:  # once: the server may be stopping
                log.warning("rapid-reset guard: found no socket listening on port %d to refuse banned addresses on", self.port)
            self._no_listener_said = not found
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
