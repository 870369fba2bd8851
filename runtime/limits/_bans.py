"""Address bans: new connections from an address caught in rapid reset are refused in the kernel.

Closing a rapid-reset connection (``_resets``) stops it burning the server's time, but its
client connects again for the price of a TCP handshake and gets a fresh budget of streams,
every one of which grpc's Python server takes up and tears down (15-40 µs of CPU each) while
the client pays about 2 µs to send it. So after closing one, the guard also bans its address
for a while: a classic BPF socket filter on the server's listening sockets drops that address's
connection attempts (TCP SYN without ACK) before grpc ever sees them. The client's ``connect``
goes unanswered and retries on its own clock (1 s, then 2 s, ...): while the ban lasts, its
attack costs the server nothing.

- Only new connections are refused. A connection accepted earlier (say the well-behaved client
  behind the same NAT) keeps working: the filter drops only SYNs, and a connection only ever
  holds the filter its listener had when it was accepted.
- A ban lasts ``first`` seconds, twice as long at each repeat offence (at most ``longest``);
  an address that stays out of trouble for ``longest`` after its ban ends starts over.
- At most :data:`MAX_BANNED` addresses are banned at once; past it the ban nearest its end is
  lifted to make room.
- An IPv6 address is banned with its /64 (:data:`IPV6_PREFIX`): one host is usually handed a
  whole /64, and could otherwise pick a fresh address for every connection.

Linux only, like the guard itself (``SO_ATTACH_FILTER``); IPv4 and IPv6 addresses (an
IPv4-mapped one is the IPv4 it is, as its packets are).
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from runtime.limits._sockets import ip_address, listening_sockets

__all__ = ["MAX_BANNED", "AddressBans", "ban_filter"]

MAX_BANNED = 400
"""Addresses banned at once (the filter stays well under BPF's 4,096 instructions)."""

IPV6_PREFIX = 64
"""An IPv6 address is banned with every address of its /64."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SO_ATTACH_FILTER = 26
_SO_DETACH_FILTER = 27

# Classic BPF (linux/filter.h): the few instructions the filter needs.
_LDB = 0x30  # BPF_LD | BPF_B | BPF_ABS: A = byte at k
_LDW = 0x20  # BPF_LD | BPF_W | BPF_ABS: A = 32-bit word at k
_AND = 0x54  # BPF_ALU | BPF_AND | BPF_K: A &= k
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K: if A == k skip jt else skip jf (each at most 255)
_JA = 0x05  # BPF_JMP | BPF_JA: skip k (32 bits, so past any number of tests)
_RET = 0x06  # BPF_RET | BPF_K: keep k bytes of the packet (0: drop it)
_NET = -0x100000  # SKF_NET_OFF: offsets from the IP header (plain offsets are the TCP header's)
_KEEP = 0xFFFF_FFFF
_DROP = 0
_TCP_FLAGS = 13
_SYN, _ACK = 0x02, 0x10


def _op(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFF_FFFF)


def _match(network: IPNetwork, source_at: int) -> list[bytes]:
    """Drop the packet if its source is in ``network`` (a prefix of whole 32-bit words: /32, /64,
    /96 or /128; the source address's words from ``source_at`` on)."""
    assert network.prefixlen % 32 == 0, network
    packed = network.network_address.packed[: network.prefixlen // 8]
    words = [int.from_bytes(packed[i : i + 4], "big") for i in range(0, len(packed), 4)]
    ops: list[bytes] = []
    for i, word in enumerate(words):
        left = len(words) - 1 - i  # word tests still to come after this one
        ops += [_op(_LDW, _NET + source_at + 4 * i), _op(_JEQ, word, jt=0, jf=2 * left + 1)]
    return [*ops, _op(_RET, _DROP)]


def ban_filter(networks: list[IPNetwork]) -> list[bytes]:
    """A classic BPF program (one 8-byte instruction an item) for a TCP listening socket that
    drops connection attempts (SYN without ACK) from ``networks`` and keeps every other packet.

        >>> len(ban_filter([ipaddress.ip_network("127.0.0.2/32")]))
        13
    """
    v4 = [a for a in networks if a.version == 4]
    v6 = [a for a in networks if a.version == 6]
    v4_ops = [op for a in v4 for op in _match(a, 12)]  # IPv4 source address: bytes 12-15
    v6_ops = [op for a in v6 for op in _match(a, 8)]  # IPv6 source address: bytes 8-23
    keep = _op(_RET, _KEEP)
    return [
        _op(_LDB, _TCP_FLAGS),
        _op(_AND, _SYN | _ACK),
        _op(_JEQ, _SYN, jt=1, jf=0),
        keep,  # not a connection attempt
        _op(_LDB, _NET),
        _op(_AND, 0xF0),
        _op(_JEQ, 0x40, jt=1, jf=0),  # IPv4: on to its tests
        _op(_JA, len(v4_ops) + 1),  # else over them to the IPv6 tests
        *v4_ops,
        keep,
        *v6_ops,
        keep,
    ]


def _attach(sock: socket.socket, program: list[bytes]) -> None:
    if not program:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)
        except OSError:
            pass  # none attached
        return
    code = ctypes.create_string_buffer(b"".join(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }; the kernel copies it.
    sock.setsockopt(
        socket.SOL_SOCKET,
        _SO_ATTACH_FILTER,
        struct.pack("HP", len(program), ctypes.addressof(code)),
    )


@dataclass(slots=True)
class _Record:
    until: float
    """When the ban ends (monotonic seconds)."""
    seconds: float
    """How long the last ban was."""


class AddressBans:
    """The addresses banned from connecting to this process's server on ``port``.

    ``first``: the first ban's length in seconds; each repeat doubles it, up to ``longest``.
    """

    def __init__(
        self,
        port: int,
        *,
        first: float,
        longest: float,
        exempt: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self.exempt = tuple(_network(network) for network in exempt)
        """Networks never banned (a proxy in front of the server stands for all its clients)."""
        self.first = first
        self.longest = max(first, longest)
        self._clock = clock
        self._records: dict[IPNetwork, _Record] = {}
        self._applied: frozenset[IPNetwork] = frozenset()

    def ban(self, ip: str) -> float:
        """Ban ``ip`` (its next ban, for a repeat offender); how many seconds it lasts (0: it is
        exempt). The ban takes effect at the next :meth:`apply`."""
        address = ip_address(ip)
        if any(address in network for network in self.exempt):
            return 0.0
        now = self._clock()
        banned = _banned_with(address)
        record = self._records.get(banned)
        if record is not None and now < record.until + self.longest:  # a repeat offender
            seconds = (
                min(self.longest, 2 * record.seconds) if now >= record.until else record.seconds
            )
        else:
            seconds = self.first
        self._records[banned] = _Record(
            until=max(now + seconds, record.until if record else 0.0), seconds=seconds
        )
        return seconds

    def holds(self, ip: str) -> bool:
        """Whether ``ip`` is banned now."""
        record = self._records.get(_banned_with(ip_address(ip)))
        return record is not None and record.until > self._clock()

    @staticmethod
    def name(ip: str) -> str:
        """What a ban of ``ip`` refuses, as a log names it: the IPv4 address, or the IPv6 /64.

            >>> AddressBans.name("2001:db8::7")
            '2001:db8::/64'
        """
        banned = _banned_with(ip_address(ip))
        return str(banned.network_address) if banned.version == 4 else str(banned)

    def banned(self) -> list[IPNetwork]:
        """What is banned now (an IPv4 address as its /32, an IPv6 one as its /64), at most
        :data:`MAX_BANNED` (those ending last)."""
        now = self._clock()
        active = sorted((r.until, a) for a, r in self._records.items() if r.until > now)
        return [address for _, address in active[-MAX_BANNED:]]

    def forget(self) -> None:
        """Drop the records of addresses whose ban ended more than ``longest`` ago."""
        now = self._clock()
        self._records = {a: r for a, r in self._records.items() if now < r.until + self.longest}

    def apply(self) -> bool:
        """Put the bans in force on the server's listening sockets, if they changed since the
        last time; whether a listening socket was found to put them on."""
        self.forget()
        banned = self.banned()
        if frozenset(banned) == self._applied:
            return True
        program = ban_filter(banned) if banned else []
        found = False
        for sock in listening_sockets(self.port):
            with sock:
                _attach(sock, program)
                found = True
        if found:
            self._applied = frozenset(banned)
        return found


def _network(value: str) -> IPNetwork:
    """An IP network from its text, an IPv4-mapped IPv6 one as the IPv4 network it is (the
    addresses it is matched against are normalised so too).

        >>> _network("::ffff:192.0.2.0/120")
        IPv4Network('192.0.2.0/24')
    """
    network = ipaddress.ip_network(value, strict=False)
    mapped = network.network_address.ipv4_mapped if isinstance(network, ipaddress.IPv6Network) else None
    if mapped is not None and network.prefixlen >= 96:
        return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


def _banned_with(address: IPAddress) -> IPNetwork:
    """What banning ``address`` bans: itself (IPv4), or its /64 (IPv6).

        >>> _banned_with(ipaddress.ip_address("2001:db8::7"))
        IPv6Network('2001:db8::/64')
    """
    if address.version == 4:
        return ipaddress.IPv4Network(address)
    return ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False)
