"""ChannelPool membership, picking and lifecycle; RoundRobin as a pure object."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

import runtime.client as client_pkg
from runtime.client import ChannelPool, RoundRobin, channel_options, client_interceptors
from runtime.errors import Unavailable


def test_round_robin_takes_turns() -> None:
    picker = RoundRobin(["a", "b", "c"])
    assert [picker.pick() for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_round_robin_skips_the_unhealthy() -> None:
    picker = RoundRobin(["a", "b", "c"])
    assert [picker.pick({"b"}) for _ in range(4)] == ["a", "c", "a", "c"]


def test_round_robin_spreads_over_all_when_none_is_healthy() -> None:
    picker = RoundRobin(["a", "b"])
    assert [picker.pick({"a", "b"}) for _ in range(4)] == ["a", "b", "a", "b"]


def test_round_robin_without_addresses_picks_nothing() -> None:
    assert RoundRobin([]).pick() is None


def test_round_robin_ignores_duplicate_addresses() -> None:
    assert RoundRobin(["a", "a", "b"]).addresses == ("a", "b")


def test_update_needs_no_event_loop_and_replaces_the_instances() -> None:
    pool = ChannelPool()
    pool.update("users", ["127.0.0.1:1", "127.0.0.1:2"])
    pool.update("users", ["127.0.0.1:3"])
    assert pool.addresses("users") == ("127.0.0.1:3",)
    pool.update("users", [])
    assert pool.modules() == ()


async def test_channels_are_spread_over_instances_and_over_channels_per_instance() -> None:
    async with ChannelPool(channels_per_instance=2) as pool:
        pool.update("users", ["127.0.0.1:1", "127.0.0.1:2"])
        picks = [pool.pick("users") for _ in range(8)]
    addresses = [address for address, _ in picks]
    assert addresses == ["127.0.0.1:1", "127.0.0.1:2"] * 4
    channels_of_first = {id(channel) for address, channel in picks if address == "127.0.0.1:1"}
    assert len(channels_of_first) == 2


async def test_two_modules_on_one_address_share_its_channels() -> None:
    async with ChannelPool() as pool:
        pool.update("users", ["127.0.0.1:1"])
        pool.update("orders", ["127.0.0.1:1"])
        assert pool.pick("users")[1] is pool.pick("orders")[1]


async def test_a_removed_instance_has_its_channels_closed() -> None:
    pool = ChannelPool(close_grace=0.0)
    pool.update("users", ["127.0.0.1:1", "127.0.0.1:2"])
    _, removed = pool.pick("users")
    _, kept = pool.pick("users")
    pool.update("users", ["127.0.0.1:2"])
    for _ in range(50):
        if removed.get_state() == grpc.ChannelConnectivity.SHUTDOWN:
            break
        await asyncio.sleep(0.01)
    assert removed.get_state() == grpc.ChannelConnectivity.SHUTDOWN
    assert kept.get_state() != grpc.ChannelConnectivity.SHUTDOWN
    await pool.close()
    assert kept.get_state() == grpc.ChannelConnectivity.SHUTDOWN


async def test_close_is_safe_twice_and_closes_every_channel() -> None:
    pool = ChannelPool()
    pool.update("users", ["127.0.0.1:1"])
    _, channel = pool.pick("users")
    await pool.close()
    await pool.close()
    assert channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN
    with pytest.raises(Unavailable):
        pool.pick("users")
    with pytest.raises(Unavailable):
        pool.update("users", ["127.0.0.1:1"])


async def test_picking_an_unknown_module_is_unavailable_naming_it() -> None:
    async with ChannelPool() as pool:
        with pytest.raises(Unavailable, match="'ghost'"):
            pool.pick("ghost")


async def test_health_marks_follow_the_address_and_are_forgotten_with_it() -> None:
    async with ChannelPool() as pool:
        pool.update("users", ["127.0.0.1:1", "127.0.0.1:2"])
        pool.mark_unhealthy("127.0.0.1:1")
        assert {pool.pick("users")[0] for _ in range(4)} == {"127.0.0.1:2"}
        pool.update("users", ["127.0.0.1:2"])
        assert pool.is_healthy("127.0.0.1:1")


def test_channel_options_carry_the_message_limit_and_keepalive() -> None:
    options = dict(channel_options(1234))
    assert options["grpc.max_send_message_length"] == 1234
    assert options["grpc.max_receive_message_length"] == 1234
    assert options["grpc.keepalive_time_ms"] > 0
    assert "grpc.use_local_subchannel_pool" not in options
    assert dict(channel_options(separate=True))["grpc.use_local_subchannel_pool"] == 1


def test_interceptor_factories_return_lists_built_once() -> None:
    interceptors = client_interceptors()
    assert isinstance(interceptors, list) and len(interceptors) == 1
    pool = ChannelPool(interceptors=interceptors)
    assert pool._interceptors[0] is interceptors[0]


def test_the_package_exports_exactly_its_public_names() -> None:
    # Sorted the way ruff (RUF022) sorts: CONSTANTS, then Classes, then functions.
    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert client_pkg.__all__ == sorted(client_pkg.__all__, key=kind)
    assert set(client_pkg.__all__) == {
        "DEFAULT_MAX_MESSAGE_BYTES",
        "ERROR_OF",
        "HANDLER_ATTRIBUTE",
        "REQUEST_ID_ATTRIBUTE",
        "VERSION_ATTRIBUTE",
        "ChannelPool",
        "ClientTracer",
        "Disconnected",
        "LocalAbort",
        "LocalCall",
        "LocalTransport",
        "ModuleClient",
        "ResponseMetadata",
        "RetryBudget",
        "RetryPolicy",
        "RoundRobin",
        "ServerTracer",
        "Unreached",
        "channel_options",
        "client_interceptors",
        "default_handler_id",
        "error_from_local_abort",
        "error_from_rpc_error",
        "error_from_status",
        "is_retryable",
        "server_interceptors",
        "stop_before_deadline",
        "stop_when_budget_spent",
    }
    for name in client_pkg.__all__:
        assert getattr(client_pkg, name) is not None


async def test_an_unchanged_update_keeps_the_round_robin_position() -> None:
    async with ChannelPool() as pool:
        pool.update("users", ["127.0.0.1:1", "127.0.0.1:2"])
        first = pool.pick("users")[0]
        pool.update("users", ["127.0.0.1:1", "127.0.0.1:2"])
        assert [first, pool.pick("users")[0]] == ["127.0.0.1:1", "127.0.0.1:2"]


class _FakeLane:
    def __init__(self, *, connected: bool) -> None:
        self.connected = connected


def test_a_lane_that_never_connected_is_asked_for_later_and_later_one_that_worked_at_once() -> None:
    from runtime.client._pool import LANE_RETRY_SECONDS, _Instance

    instance = _Instance("127.0.0.1:1", [], lanes=True)
    waits = []
    for _ in range(3):  # behind a port mapping: the named port never answers
        lane = instance._lane = _FakeLane(connected=False)
        assert instance.lane_failed(lane, unreached=True) is lane
        waits.append(round(instance._lane_retry_at - time.monotonic()))
    assert waits == [0, LANE_RETRY_SECONDS, 2 * LANE_RETRY_SECONDS]
    # A worker restarted on its old port: its lane had worked, so it is looked up again at once,
    # and the count of misses starts over.
    lane = instance._lane = _FakeLane(connected=True)
    instance.lane_failed(lane, unreached=True)
    assert instance._lane_retry_at <= time.monotonic()
    assert instance._lane_misses == 0
    assert instance.lane_failed(lane, unreached=True) is None  # retired already
