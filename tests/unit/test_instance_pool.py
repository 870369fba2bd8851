"""InstancePool membership, picking, ejection and lifecycle; RoundRobin and Outliers as pure objects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import pytest

from runtime.client import InstancePool, Outliers
from runtime.client._pool import IN_PROCESS, LANE_RETRY_SECONDS, RoundRobin, _Worker
from runtime.errors import Unavailable
from runtime.identity import Peer, current_peer
from runtime.tls import InternalTls
from runtime.transport import InProcessModules, MessageQueue, Metadata, ProducedStream
from runtime.transport._grpc import channel_options


def test_round_robin_takes_turns() -> None:
    picker = RoundRobin(["a", "b", "c"])
    assert [picker.pick() for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_round_robin_skips_what_it_is_told_to() -> None:
    picker = RoundRobin(["a", "b", "c"])
    assert [picker.pick({"b"}) for _ in range(4)] == ["a", "c", "a", "c"]


def test_round_robin_spreads_over_all_when_all_are_skipped() -> None:
    picker = RoundRobin(["a", "b"])
    assert [picker.pick({"a", "b"}) for _ in range(4)] == ["a", "b", "a", "b"]


def test_round_robin_without_addresses_picks_nothing() -> None:
    assert RoundRobin([]).pick() is None


def test_round_robin_ignores_duplicate_addresses() -> None:
    assert RoundRobin(["a", "a", "b"]).addresses == ("a", "b")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_transport_failure_ejects_at_once_for_longer_each_time_in_a_row() -> None:
    clock = Clock()
    outliers = Outliers(eject_seconds=5.0, clock=clock)
    outliers.failed("a")
    assert set(outliers.ejected()) == {"a"}
    clock.now += 5.0
    assert set(outliers.ejected()) == set()
    outliers.failed("a")  # a second ejection in a row lasts twice as long
    clock.now += 9.9
    assert set(outliers.ejected()) == {"a"}
    clock.now += 0.2
    assert set(outliers.ejected()) == set()


def test_consecutive_missed_deadlines_eject_and_an_answer_ends_the_streak() -> None:
    clock = Clock()
    outliers = Outliers(eject_seconds=5.0, consecutive_deadlines=3, clock=clock)
    outliers.missed_deadline("a")
    outliers.missed_deadline("a")
    outliers.succeeded("a")  # it answered: a slow call, not a hung instance
    outliers.missed_deadline("a")
    outliers.missed_deadline("a")
    assert set(outliers.ejected()) == set()
    outliers.missed_deadline("a")
    assert set(outliers.ejected()) == {"a"}


def test_update_needs_no_event_loop_and_replaces_the_instances() -> None:
    pool = InstancePool()
    pool.update("users", ["127.0.0.1:1", "127.0.0.1:2"])
    pool.update("users", ["127.0.0.1:3"])
    assert pool.addresses("users") == ("127.0.0.1:3",)
    pool.update("users", [])
    assert pool.keys() == ()


async def test_instances_are_picked_in_turn_and_two_modules_on_one_address_share_its_transport() -> None:
    async with InstancePool() as pool:
        pool.update("users", ["127.0.0.1:1", "127.0.0.1:2"])
        pool.update("orders", ["127.0.0.1:1"])
        assert [pool.pick("users")[0] for _ in range(4)] == ["127.0.0.1:1", "127.0.0.1:2"] * 2
        assert pool.pick("orders")[1] is pool.pick("users")[1]


async def test_an_ejected_instance_is_skipped_and_forgotten_with_its_address() -> None:
    async with InstancePool() as pool:
        pool.update("users", ["127.0.0.1:1", "127.0.0.1:2"])
        pool.outliers.failed("127.0.0.1:1")
        assert {pool.pick("users")[0] for _ in range(4)} == {"127.0.0.1:2"}
        pool.update("users", ["127.0.0.1:2"])
        assert "127.0.0.1:1" not in pool.outliers.ejected()


async def test_a_retry_avoids_the_instances_its_call_tried_while_another_healthy_one_exists() -> None:
    """Envoy's ``previous_hosts``: a retry after a timeout does not go back to the instance that
    may be hung, whatever the round robin's turn; with nothing else healthy it may."""
    async with InstancePool() as pool:
        pool.update("users", ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
        picked = pool.pick_healthy("users", avoid=["127.0.0.1:1"])
        assert [pool.pick_healthy("users", avoid=["127.0.0.1:1"])[0] for _ in range(6)].count("127.0.0.1:1") == 0
        assert picked is not None and picked[0] != "127.0.0.1:1"
        pool.outliers.failed("127.0.0.1:2")
        pool.outliers.failed("127.0.0.1:3")
        again = pool.pick_healthy("users", avoid=["127.0.0.1:1"])
        assert again is not None and again[0] == "127.0.0.1:1", "the only healthy one is tried again"


async def test_a_module_served_in_process_is_picked_before_the_network_and_called_as_this_process(
    tls_dir: Path,
) -> None:
    local = InProcessModules()
    seen: list[Peer | None] = []

    class Endpoints:
        async def unary(self, *args: object) -> tuple[bytes, tuple[()]]:
            seen.append(current_peer.get())
            return b"", ()

    local.register("users", Endpoints(), versions=["2025-06-01"])
    tls = InternalTls.load(tls_dir, Peer.module("orders"), dev_ca=True)
    async with InstancePool(local=local, tls=tls) as pool:
        pool.update("users@2025-06-01", ["127.0.0.1:1"])
        address, transport = pool.pick("users@2025-06-01")
        assert address == IN_PROCESS
        assert await transport.unary("/users.v1.UsersService/GetUser", b"", (), None) == (b"", ())
        assert seen == [Peer.module("orders")]  # the in-process call is made as the caller's identity
        assert current_peer.get() is None  # and only for that call
        assert pool.known("users@2025-06-01") and not pool.known("users@2025-01-15")


async def test_a_stream_to_a_module_served_in_process_runs_as_this_process_to_its_end(tls_dir: Path) -> None:
    """The stream's task starts when the call is made and keeps the caller's identity while it
    runs, after ``stream`` has returned and the caller's own context no longer holds it."""
    local = InProcessModules()
    seen: list[Peer | None] = []

    class Endpoints:
        def stream(self, method: str, requests: AsyncIterable[bytes], *args: object) -> ProducedStream:
            async def produce(out: MessageQueue) -> Metadata:
                async for message in requests:
                    await asyncio.sleep(0)  # a later turn of the loop than the call
                    seen.append(current_peer.get())
                    await out.put(message)
                return ()

            return ProducedStream(produce)

    async def requests() -> AsyncIterator[bytes]:
        for message in (b"a", b"b"):
            yield message

    local.register("feed", Endpoints())
    tls = InternalTls.load(tls_dir, Peer.module("relay"), dev_ca=True)
    async with InstancePool(local=local, tls=tls) as pool:
        address, transport = pool.pick("feed")
        assert address == IN_PROCESS
        call = transport.stream("/feed.v1.FeedService/Echo", requests(), (), None)
        assert current_peer.get() is None  # set for the stream only
        assert [message async for message in call] == [b"a", b"b"]
        await call.aclose()
    assert seen == [Peer.module("relay")] * 2


async def test_close_is_safe_twice_and_refuses_what_comes_after() -> None:
    pool = InstancePool()
    pool.update("users", ["127.0.0.1:1"])
    pool.pick("users")
    await pool.close()
    await pool.close()
    with pytest.raises(Unavailable):
        pool.pick("users")
    with pytest.raises(Unavailable):
        pool.update("users", ["127.0.0.1:1"])


async def test_picking_an_unknown_module_is_unavailable_naming_it() -> None:
    async with InstancePool() as pool:
        with pytest.raises(Unavailable, match="no instance of ghost is known"):
            pool.pick("ghost")


async def test_an_unchanged_update_keeps_the_round_robin_position() -> None:
    async with InstancePool() as pool:
        pool.update("users", ["127.0.0.1:1", "127.0.0.1:2"])
        first = pool.pick("users")[0]
        pool.update("users", ["127.0.0.1:1", "127.0.0.1:2"])
        assert [first, pool.pick("users")[0]] == ["127.0.0.1:1", "127.0.0.1:2"]


def test_channel_options_carry_the_message_limit_and_keepalive() -> None:
    options = dict(channel_options(1234))
    assert options["grpc.max_send_message_length"] == 1234
    assert options["grpc.max_receive_message_length"] == 1234
    assert options["grpc.keepalive_time_ms"] > 0
    assert "grpc.use_local_subchannel_pool" not in options
    assert dict(channel_options(separate=True))["grpc.use_local_subchannel_pool"] == 1



class _FakeLane:
    def __init__(self, *, connected: bool) -> None:
        self.connected = connected

    async def close(self, grace: float | None = None) -> None:
        return None


async def test_a_lane_that_never_connected_is_asked_for_later_and_later_one_that_worked_at_once() -> None:
    worker = _Worker("127.0.0.1:1", channels=1, max_message_bytes=1024, lanes=True, close_grace=0.0)
    waits = []
    for _ in range(3):  # behind a port mapping: the named port never answers
        lane = worker._lane = _FakeLane(connected=False)  # type: ignore[assignment]
        worker._lane_failed(lane, unreached=True)  # type: ignore[arg-type]
        assert worker._lane is None
        waits.append(round(worker._lane_retry_at - time.monotonic()))
    assert waits == [0, LANE_RETRY_SECONDS, 2 * LANE_RETRY_SECONDS]
    # A worker restarted on its old port: its lane had worked, so it is looked up again at once,
    # and the count of misses starts over.
    lane = worker._lane = _FakeLane(connected=True)  # type: ignore[assignment]
    worker._lane_failed(lane, unreached=True)  # type: ignore[arg-type]
    assert worker._lane_retry_at <= time.monotonic()
    assert worker._lane_misses == 0
    await worker.close(0)
    await asyncio.sleep(0)
