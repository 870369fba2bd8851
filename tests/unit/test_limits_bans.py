"""Address bans: a banned address's connection attempts are dropped in the kernel, on real
loopback sockets (127.0.0.0/8 is all loopback, so 127.0.0.2 plays the banned client)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from ipaddress import ip_network

import pytest

from runtime.limits import AddressBans
from runtime.limits._bans import MAX_BANNED, ban_filter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0), backlog=64) as sock:
        yield sock


def _connects(port: int, source: str, host: str = "127.0.0.1", family: int = socket.AF_INET) -> bool:
    """Whether a connection from ``source`` is accepted within half a second (a dropped SYN is
    retried only after a second)."""
    with socket.socket(family) as client:
        client.bind((source, 0))
        client.settimeout(0.5)
        try:
            client.connect((host, port))
        except TimeoutError:
            return False
        return True


def test_a_banned_address_cannot_connect_and_everyone_else_can(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    earlier = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))
    served_earlier, _ = listener.accept()
    clock = Clock()
    bans = AddressBans(port, first=10, longest=60, clock=clock)
    try:
        assert bans.ban("127.0.0.2") == 10
        assert bans.apply(), "the listening socket is found"
        assert not _connects(port, "127.0.0.2"), "the banned address's SYN goes unanswered"
        assert _connects(port, "127.0.0.1") and _connects(port, "127.0.0.3"), "others get in"
        earlier.sendall(b"still here")
        served_earlier.settimeout(2)
        assert served_earlier.recv(16) == b"still here", "a connection accepted before the ban keeps working"
        served_earlier.sendall(b"x" * 200_000)  # and in the other direction, past a few packets
        earlier.settimeout(2)
        received = 0
        while received < 200_000:
            received += len(earlier.recv(1 << 16))
        clock.now += 10
        assert bans.apply()
        assert _connects(port, "127.0.0.2"), "the ban ends on time"
    finally:
        earlier.close()
        served_earlier.close()


def test_many_addresses_are_banned_at_once(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    bans = AddressBans(port, first=10, longest=60)
    for last in range(2, 40):
        bans.ban(f"127.0.0.{last}")
    bans.ban("::ffff:127.0.0.77")  # an IPv4-mapped address is the IPv4 it is
    bans.ban("::2")
    assert bans.apply()
    assert not _connects(port, "127.0.0.2") and not _connects(port, "127.0.0.39") and not _connects(port, "127.0.0.77")
    assert _connects(port, "127.0.0.40") and _connects(port, "127.0.0.1")


def test_ipv6_addresses_are_banned_too() -> None:
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as listener:
        port = listener.getsockname()[1]
        bans = AddressBans(port, first=10, longest=60)
        bans.ban("::1")
        assert bans.apply()
        assert not _connects(port, "::1", "::1", socket.AF_INET6)
        assert _connects(port, "127.0.0.1"), "an IPv4 client of the dual-stack listener gets in"
        bans.ban("127.0.0.1")
        assert bans.apply()
        assert not _connects(port, "127.0.0.1")


def test_a_repeat_offender_is_banned_twice_as_long_until_it_behaves() -> None:
    clock = Clock()
    bans = AddressBans(1, first=10, longest=60, clock=clock)
    assert bans.ban("127.0.0.2") == 10
    assert bans.ban("127.0.0.2") == 10, "caught again while banned (a connection opened before): the same ban"
    lengths: list[float] = []
    for _ in range(5):
        clock.now += lengths[-1] if lengths else 10
        lengths.append(bans.ban("127.0.0.2"))
    assert lengths == [20, 40, 60, 60, 60]
    clock.now += 60 + 60  # its ban ends, and it stays out of trouble for `longest`
    assert bans.ban("127.0.0.2") == 10
    assert bans.banned() == [ip_network("127.0.0.2/32")]
    clock.now += 10
    assert bans.banned() == []


def test_at_most_max_banned_addresses_and_the_filter_stays_within_bpf_limits() -> None:
    clock = Clock()
    bans = AddressBans(1, first=10, longest=60, clock=clock)
    for n in range(MAX_BANNED + 5):
        clock.now += 0.001
        bans.ban(f"10.0.{n // 256}.{n % 256}")
    banned = bans.banned()
    assert len(banned) == MAX_BANNED
    assert ip_network("10.0.0.0/32") not in banned, "the bans nearest their end make room"
    v6 = [ip_network(f"2001:db8:{n:x}::/64") for n in range(MAX_BANNED)]
    assert len(ban_filter(v6)) <= 4096, "BPF_MAXINSNS"


def test_exempt_networks_are_never_banned() -> None:
    """A proxy in front of the gateway stands for every client behind it."""
    bans = AddressBans(1, first=10, longest=60, exempt=("10.1.0.0/16", "::ffff:192.0.2.7"))
    assert bans.ban("10.1.2.3") == 0 and bans.ban("::ffff:10.1.9.9") == 0
    assert bans.ban("192.0.2.7") == 0, "an IPv4-mapped exemption is the IPv4 address it is"
    assert bans.ban("10.2.0.1") == 10
    assert bans.banned() == [ip_network("10.2.0.1/32")]


def test_an_exemption_that_is_not_an_address_is_refused_at_start() -> None:
    from pydantic import ValidationError

    from runtime.config import LimitsSettings

    assert LimitsSettings(reset_ban_exempt=("10.0.0.0/8", "2001:db8::/32", "192.0.2.1")).reset_ban_exempt
    with pytest.raises(ValidationError, match=r"'10\.0\.0\.0/33' is not an IP address or network"):
        LimitsSettings(reset_ban_exempt=("10.0.0.0/33",))


def test_an_ipv6_address_is_banned_with_its_64() -> None:
    """A host is usually handed a whole /64: one address of it banned is all of it banned."""
    bans = AddressBans(1, first=10, longest=60)
    bans.ban("2001:db8:0:7::1")
    assert bans.ban("2001:db8:0:7:ffff::9") == 10, "the same /64 is the same offender, banned already"
    assert bans.banned() == [ip_network("2001:db8:0:7::/64")]
    bans.ban("2001:db8:0:8::1")
    assert len(bans.banned()) == 2


def test_hundreds_of_bans_are_all_in_force_and_other_families_pass_them() -> None:
    """The filter's jumps stay within what classic BPF allows (255 instructions for a
    conditional jump) however many addresses are banned."""
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True, backlog=64) as listener:
        port = listener.getsockname()[1]
        bans = AddressBans(port, first=10, longest=60)
        for n in range(300):
            bans.ban(f"10.{n // 256}.{n % 256}.1")
        bans.ban("127.0.0.7")  # the last IPv4 test of the program
        for n in range(98):
            bans.ban(f"2001:db8:{n:x}::1")
        assert len(bans.banned()) == 399
        assert bans.apply()
        assert not _connects(port, "127.0.0.7")
        assert _connects(port, "127.0.0.8"), "past every IPv4 test, kept"
        assert _connects(port, "::1", "::1", socket.AF_INET6), "an IPv6 client jumps over the IPv4 tests"
        bans.ban("::1")
        assert bans.apply()
        assert not _connects(port, "::1", "::1", socket.AF_INET6), "the last IPv6 test"
        assert _connects(port, "127.0.0.8")
