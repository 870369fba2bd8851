"""The gateway's limits hold against an attacker, over real sockets on 127.0.0.1.

Each test starts a real gateway (and a worker) with small limits, attacks it the way the limit
is meant for (bounded, and stopping by itself), and checks that the attack is refused or cut off
while a normal caller on another connection is still served. The bounds are grpc core's own
(``runtime.limits``); these tests show they are applied and do what they say.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import threading
import time
from collections import Counter
from typing import Any

import grpc
import h2.errors
import h2.settings
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from runtime.gateway import Gateway
from tests.conftest import PROBE_MODULES_DIR
from tests.fixtures.gateway_modules.stack import GatewayClient, GatewayStack
from tests.fixtures.raw_h2 import RawH2, closed_within, grpc_headers, grpc_message

GET_STOCK = "/inventory.v1.InventoryService/GetStock"
ECHO = "/probe.v1.ProbeService/Echo"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


async def _gateway(gw_stack: GatewayStack, **limits: Any) -> tuple[Gateway, GatewayClient]:
    await gw_stack.worker("inventory")
    gateway = await gw_stack.gateway(ready=["inventory"], limits=limits)
    return gateway, gw_stack.client(gateway)


def _nothing_closed_nor_banned(gateway: Gateway) -> bool:
    """Whether the gateway's counters of closed connections and banned addresses are all 0."""
    counted = re.findall(rb"^modrpc_(?:connections_closed|address_bans)_total\{[^}]*\} (\S+)$", gateway.metrics.render(), re.M)
    return len(counted) == 4 and all(float(value) == 0 for value in counted)


async def _served(client: GatewayClient) -> bool:
    reply = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, timeout=5)
    return reply.ok


async def test_idle_connections_past_the_limit_are_refused_and_the_rest_timed_out(
    gw_stack: GatewayStack,
) -> None:
    gateway, client = await _gateway(gw_stack, max_connections=20, handshake_timeout=1.0)
    assert await _served(client)  # an established caller, before the flood
    idle = [socket.create_connection(("127.0.0.1", gateway.port)) for _ in range(40)]
    try:
        refused = sum(await asyncio.gather(*(asyncio.to_thread(closed_within, s, 0.5) for s in idle)))
        assert refused >= 40 - 20, "connections past the limit are closed as they arrive"
        assert await _served(client), "the established caller is still served"
        await asyncio.sleep(1.0)
        closed = sum(await asyncio.gather(*(asyncio.to_thread(closed_within, s, 1.5) for s in idle)))
        assert closed == 40, "connections that never said anything are cut off at the handshake timeout"
        assert await _served(gw_stack.client(gateway)), "a new caller gets in again"
    finally:
        for sock in idle:
            sock.close()


async def test_a_connection_with_no_call_is_closed_after_the_idle_timeout(gw_stack: GatewayStack) -> None:
    gateway, _ = await _gateway(gw_stack, idle_timeout=1.0)
    quiet = RawH2(gateway.port)
    try:
        assert await asyncio.to_thread(quiet.wait_closed, 5.0)
        assert quiet.goaway is not None or quiet.closed
    finally:
        quiet.close()


async def test_a_slow_reader_is_cut_off_and_others_are_served(gw_stack: GatewayStack) -> None:
    """A client that asks for big answers and never reads them (nor the keepalive pings): its
    answers wait in the gateway until the unanswered ping cuts it off and frees them."""
    await gw_stack.worker("probe", tree=PROBE_MODULES_DIR)
    # Windows large enough for each 1 MB request to go in whole: the gateway's window updates
    # would queue behind the answers this reader leaves unread.
    gateway, client = await _gateway(gw_stack, keepalive_time=1.0, keepalive_timeout=1.0, stream_window_bytes=2 << 20)
    await gateway.wait_ready(["probe"], timeout=10.0)
    reader = RawH2(gateway.port)
    reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    reader.conn.increment_flow_control_window(2**31 - 1 - 65535)
    text = b"x" * 1_000_000
    echo = b"\n" + _varint(len(text)) + text  # probe.Echo{text}
    auth = ("authorization", f"Bearer {gw_stack.token()}")
    for _ in range(6):  # 6 MB of answers, more than the sockets' buffers hold
        stream_id = reader.conn.get_next_available_stream_id()
        reader.conn.send_headers(stream_id, grpc_headers(gateway.port, ECHO, auth))
        try:
            await asyncio.to_thread(reader.send_all, stream_id, grpc_message(echo), within=3.0)
        except TimeoutError:  # cut off already, or stalled behind its unread answers: enough sent
            break
    try:
        await asyncio.sleep(3.0)  # keepalive time + timeout, and a margin
        assert await _served(client)
        assert await asyncio.to_thread(closed_within, reader.sock, 10.0), "the slow reader is cut off"
    finally:
        reader.close()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def test_a_rapid_reset_connection_is_closed_and_never_cancels_others(gw_stack: GatewayStack) -> None:
    """Streams opened and reset in a loop: grpc refuses those past the stream limit, the reset
    guard closes the connection once it has reset ``max_reset_streams`` (the connection is
    not let live to its age: ``max_connection_age`` stays at its default, 300 s), with a GOAWAY
    ENHANCE_YOUR_CALM ``rapid_reset``, and a caller on another connection is served throughout.
    The attacker's address may not connect again for ``reset_ban`` (its SYN goes unanswered),
    while other addresses, and a connection it had open before, are served; then it may."""
    gateway, client = await _gateway(
        gw_stack, max_concurrent_streams=10, max_reset_streams=100, reset_check_interval=0.1, reset_ban=BAN
    )
    before = RawH2(gateway.port, source="127.0.0.2")  # the attacker's address, well-behaved so far
    attacker = RawH2(gateway.port, source="127.0.0.2")
    attack = threading.Thread(target=attacker.rapid_reset, args=(GET_STOCK, 200_000))
    codes: Counter[str] = Counter()
    started = time.monotonic()
    attack.start()
    try:
        while attack.is_alive() and time.monotonic() - started < 20:
            reply = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, timeout=5)
            codes[reply.code.name] += 1
    finally:
        attacker.stop = True  # ends the loop if it is still going
        await asyncio.to_thread(attack.join, 10)
        ended = attacker.closed or attacker.goaway is not None
        if attacker.goaway is None:  # the loop ended on a failed write: read what came before
            attacker.pump(0.2)
        attacker.close()
    assert ended, "the attacking connection is closed"
    assert attacker.opened < 200_000, "before the attacker was done"
    assert attacker.goaway is not None, "the attacker is told why"
    assert attacker.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert attacker.goaway.additional_data == b"rapid_reset"
    assert codes and set(codes) == {"OK"}, f"other connections' calls: {dict(codes)}"
    assert b'modrpc_connections_closed_total{reason="rapid_reset"} 1.0' in gateway.metrics.render()
    assert b'modrpc_address_bans_total{reason="rapid_reset"} 1.0' in gateway.metrics.render()
    assert not await asyncio.to_thread(_connects, gateway.port, "127.0.0.2"), "the attacker's address is refused"
    assert await asyncio.to_thread(_connects, gateway.port, "127.0.0.3"), "another address gets in"
    try:
        assert await _stock_over(before), "the attacker's address keeps the connection it had open before"
    finally:
        before.close()
    give_up = time.monotonic() + BAN + 5
    while not await asyncio.to_thread(_connects, gateway.port, "127.0.0.2") and time.monotonic() < give_up:
        pass  # each refused attempt takes half a second
    assert time.monotonic() < give_up, "once the ban ends the address may connect again"


BAN = 8.0
"""The rapid-reset test's ban, in seconds: long enough to be seen in force on a busy machine."""


def _connects(port: int, source: str) -> bool:
    """Whether a TCP connection from ``source`` is accepted within half a second (a dropped SYN
    is sent again only after a second)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5, source_address=(source, 0)).close()
    except TimeoutError:
        return False
    return True


async def _stock_over(connection: RawH2) -> bool:
    """A public GetStock call over a raw connection: whether it is answered OK."""
    stream_id = connection.conn.get_next_available_stream_id()
    connection.conn.send_headers(stream_id, grpc_headers(connection.port, GET_STOCK))
    connection.conn.send_data(stream_id, grpc_message(b"\n\x08WIDGET-1"), end_stream=True)
    connection.flush()
    status = await asyncio.to_thread(connection.wait_status, stream_id, 5.0)
    return status is not None and status[0] == "0"


def _reset_over_fresh_connections(port: int, path: str, per_connection: int, within: float) -> tuple[int, bool]:
    """From 127.0.0.2, open a connection, reset ``per_connection`` streams on it and hang up,
    again and again; the connections made, and whether one was refused (its SYN unanswered)."""
    made = 0
    give_up = time.monotonic() + within
    while time.monotonic() < give_up:
        try:
            connection = RawH2(port, source="127.0.0.2")
        except (TimeoutError, OSError):
            return made, True
        made += 1
        try:
            connection.rapid_reset(path, per_connection)
            connection.pump(0.005)
        finally:
            connection.close()
    return made, False


async def test_a_client_resetting_over_fresh_connections_is_caught_by_its_address(gw_stack: GatewayStack) -> None:
    """A client that hangs up before any one connection reaches ``max_reset_streams`` is caught
    by what its address's connections did together: its address is banned while others, and
    callers on other connections, are served."""
    gateway, client = await _gateway(
        gw_stack, max_concurrent_streams=10, max_reset_streams=100, reset_check_interval=0.1, reset_ban=BAN
    )
    attack = asyncio.create_task(asyncio.to_thread(_reset_over_fresh_connections, gateway.port, GET_STOCK, 60, 30.0))
    codes: Counter[str] = Counter()
    while not attack.done():
        reply = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, timeout=5)
        codes[reply.code.name] += 1
    made, refused = await attack
    assert refused, f"the address is refused after {made} connections"
    assert set(codes) == {"OK"}, f"other connections' calls: {dict(codes)}"
    assert b'modrpc_address_bans_total{reason="rapid_reset"} 1.0' in gateway.metrics.render()
    assert await asyncio.to_thread(_connects, gateway.port, "127.0.0.3"), "another address gets in"


async def test_resets_of_any_method_count_not_only_routes(gw_stack: GatewayStack) -> None:
    """Health checks and methods no module has are reset in a loop as cheaply as routes: the
    guard closes those connections too."""
    gateway, _ = await _gateway(gw_stack, max_concurrent_streams=10, max_reset_streams=100, reset_check_interval=0.1)
    for path in ("/grpc.health.v1.Health/Check", "/no.such.v1.Service/Method"):
        attacker = RawH2(gateway.port, source="127.0.0.4" if "health" in path else "127.0.0.5")
        try:
            await asyncio.to_thread(attacker.rapid_reset, path, 100_000)
            assert attacker.goaway is not None or attacker.closed, path
            assert attacker.opened < 100_000, path
        finally:
            attacker.close()


async def test_streams_cancelled_after_their_answers_are_not_resets(gw_stack: GatewayStack) -> None:
    """A client that ends each stream it is done with by cancelling it, once answered (how many
    clients end a watch), keeps its connection and its address however many it ends so."""
    gateway, client = await _gateway(gw_stack, max_reset_streams=20, reset_check_interval=0.05)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        check = channel.stream_stream("/inventory.v1.InventoryService/CheckStock")
        for _ in range(60):
            call = check(timeout=10)
            await call.write(b"\n\x08WIDGET-1")
            assert await call.read() is not grpc.aio.EOF
            call.cancel()
        await asyncio.sleep(0.5)  # several looks of the guard
        after = await channel.unary_unary(GET_STOCK)(b"\n\x08WIDGET-1", timeout=5)
    assert after is not None
    assert _nothing_closed_nor_banned(gateway)
    assert await _served(client)


async def test_many_open_streams_over_several_connections_are_not_resets(gw_stack: GatewayStack) -> None:
    """Streams that sent their request and stay open (watches), 240 of them over three
    connections from one address, then dropped with their connections: not a rapid reset,
    however many there are, for the address or any connection."""
    # The unknown-method calls that make the guard look come faster than unrouted_rate_limit.
    gateway, client = await _gateway(
        gw_stack, max_reset_streams=100, reset_check_interval=0.05, max_calls_per_client=300,
        unrouted_rate_limit="100000/second",
    )  # fmt: skip
    metadata = (("authorization", f"Bearer {gw_stack.token()}"),)
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(3)
    ]
    calls = []
    try:
        for channel in channels:
            check = channel.stream_stream("/inventory.v1.InventoryService/CheckStock")
            for _ in range(80):
                call = check(timeout=30, metadata=metadata)
                await call.write(b"\n\x08WIDGET-1")
                calls.append(call)
        await asyncio.gather(*(call.read() for call in calls))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as other:
            unknown = other.unary_unary("/no.such.v1.Service/Method")
            for _ in range(5):  # calls failing elsewhere make the guard look, again and again
                failed = await asyncio.gather(*(unknown(b"", timeout=5) for _ in range(60)), return_exceptions=True)
                assert {f.code() for f in failed if isinstance(f, grpc.aio.AioRpcError)} == {grpc.StatusCode.UNIMPLEMENTED}
                await asyncio.sleep(0.1)
    finally:
        for channel in channels:
            await channel.close(None)  # the streams end with their connections, unanswered
    await asyncio.sleep(0.5)
    assert _nothing_closed_nor_banned(gateway)
    assert await _served(client), "the address still gets in"


async def test_health_watches_from_one_address_cannot_hold_every_call_slot(gw_stack: GatewayStack) -> None:
    """grpc's health and reflection services need no credentials: their calls count against the
    anonymous callers' budget like a public method's, so one address cannot hold every slot
    with ``Health/Watch`` streams."""
    gateway, client = await _gateway(gw_stack, max_calls_per_client=3)
    holder = RawH2(gateway.port)
    watches = []
    try:
        for _ in range(5):
            stream_id = holder.conn.get_next_available_stream_id()
            holder.conn.send_headers(stream_id, grpc_headers(gateway.port, "/grpc.health.v1.Health/Watch"))
            holder.conn.send_data(stream_id, grpc_message(b""), end_stream=True)
            holder.flush()
            watches.append(stream_id)
        refused = [await asyncio.to_thread(holder.wait_status, stream_id, 3.0) for stream_id in watches[3:]]
        assert [status and status[0] for status in refused] == ["8", "8"], f"watches past the budget: {refused}"
        assert all(status and "limits.max_calls_per_client" in status[1] for status in refused)
        signed_in = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, token=gw_stack.token(), timeout=5)
        assert signed_in.ok, signed_in
    finally:
        holder.close()


async def test_health_checks_from_one_address_are_rate_limited_and_other_addresses_served(
    gw_stack: GatewayStack,
) -> None:
    """Answered health checks are no rapid reset, and their calls end at once, so the budget of
    calls at once never holds them: ``unrouted_rate_limit`` bounds how often one address
    may call grpc's own services. Past it, RESOURCE_EXHAUSTED names the setting and carries
    RetryInfo; another address, and the routes, are served meanwhile."""
    gateway, client = await _gateway(gw_stack, unrouted_rate_limit="3/minute")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        codes = []
        for _ in range(5):
            try:
                await check(health_pb2.HealthCheckRequest(), timeout=5)
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as refused:
                codes.append(refused.code())
                last = refused
        assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2, codes
        assert "limits.unrouted_rate_limit" in str(last.details())
        status = rpc_status.from_call(last)  # type: ignore[arg-type]  # an AioRpcError has what from_call reads
        assert status is not None and any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        try:
            await reflection.read()
            raise AssertionError("reflection from the same address is past the same limit")
        except grpc.aio.AioRpcError as refused:
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    other = RawH2(gateway.port, source="127.0.0.2")
    try:
        stream_id = other.conn.get_next_available_stream_id()
        other.conn.send_headers(stream_id, grpc_headers(gateway.port, "/grpc.health.v1.Health/Check"))
        other.conn.send_data(stream_id, grpc_message(b""), end_stream=True)
        other.flush()
        answered = await asyncio.to_thread(other.wait_status, stream_id, 5.0)
        assert answered is not None and answered[0] == "0", f"another address: {answered}"
    finally:
        other.close()
    assert await _served(client)


async def test_the_messages_of_one_reflection_stream_count_against_the_same_rate(gw_stack: GatewayStack) -> None:
    """One reflection stream may carry any number of requests: each one after the first counts
    as a call would, so a stream cannot carry what separate calls would be refused."""
    gateway, _ = await _gateway(gw_stack, unrouted_rate_limit="5/minute")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=5)
        answered = 0
        with contextlib.suppress(grpc.aio.AioRpcError):
            for _ in range(8):
                await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
                await stream.read()
                answered += 1
        assert answered == 5
        assert await stream.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limits.unrouted_rate_limit" in await stream.details()


async def test_an_address_that_keeps_calling_health_past_its_refusals_is_cut_off(gw_stack: GatewayStack) -> None:
    """A refused health check costs the gateway about what an answered one does: an address
    refused more often than ``unrouted_rate_limit`` allows calls is flooding. Its
    connection is closed with a GOAWAY saying so, and its address banned, while another
    address is served; one within its refusals is not."""
    gateway, client = await _gateway(gw_stack, unrouted_rate_limit="20/minute", reset_check_interval=0.05, reset_ban=BAN)
    polite = RawH2(gateway.port, source="127.0.0.3")
    flooder = RawH2(gateway.port, source="127.0.0.4")
    try:
        first = Counter(await asyncio.to_thread(polite.call_all, HEALTH_CHECK, 30, 3.0))
        assert first == Counter({"0": 20, "8": 10}), first
        await asyncio.sleep(0.3)
        assert not polite.closed and polite.goaway is None, "refused no more often than allowed: kept"
        flood = Counter(await asyncio.to_thread(flooder.call_all, HEALTH_CHECK, 60, 3.0))
        assert flood["0"] == 20 and flood["8"] >= 21, flood
        assert await asyncio.to_thread(flooder.wait_closed, 3.0), "the flooding connection is closed"
        assert flooder.goaway is None or flooder.goaway.additional_data == b"flood", flooder.goaway
        assert not await asyncio.to_thread(_connects, gateway.port, "127.0.0.4"), "its address is refused"
        assert not polite.closed and polite.goaway is None
        assert await _stock_over(polite), "another address is served"
    finally:
        polite.close()
        flooder.close()
    assert await _served(client)
    rendered = gateway.metrics.render()
    assert b'modrpc_address_bans_total{reason="flood"} 1.0' in rendered
    assert b'modrpc_connections_closed_total{reason="flood"} 1.0' in rendered


@pytest.mark.parametrize(
    ("path", "answer", "source"),
    [
        ("/nope.v1.Nope/Nothing", "12", "127.0.0.6"),  # UNIMPLEMENTED
        ("/inventory.v1.InventoryService/Reserve", "16", "127.0.0.7"),  # UNAUTHENTICATED
    ],
)
async def test_calls_that_never_reach_a_module_count_against_the_same_rate(
    gw_stack: GatewayStack, path: str, answer: str, source: str
) -> None:
    """A call to a method no module has, or to a route without credentials, is answered at
    once, as a health check is: without the same rate, one address calling either in a loop
    kept most of a core busy. Past it, RESOURCE_EXHAUSTED; past its refusals, the connection
    is closed and the address banned."""
    gateway, client = await _gateway(gw_stack, unrouted_rate_limit="20/minute", reset_check_interval=0.05, reset_ban=BAN)
    prober = RawH2(gateway.port, source=source)
    try:
        first = Counter(await asyncio.to_thread(prober.call_all, path, 30, 3.0))
        assert first == Counter({answer: 20, "8": 10}), first
        flood = Counter(await asyncio.to_thread(prober.call_all, path, 40, 3.0))
        assert flood["8"] >= 11, flood
        assert await asyncio.to_thread(prober.wait_closed, 3.0), "the flooding connection is closed"
        assert not await asyncio.to_thread(_connects, gateway.port, source), "its address is refused"
    finally:
        prober.close()
    assert await _served(client), "others are served"


async def test_one_anonymous_address_cannot_hold_every_call_slot(gw_stack: GatewayStack) -> None:
    """Streams opened and left idle hold a call slot each until the route's timeout (300 s for
    CheckStock). Past ``max_calls_per_client`` an anonymous address is refused at once, naming
    the setting, while an authenticated caller is still served; a slot comes back as its
    stream ends."""
    gateway, client = await _gateway(gw_stack, max_calls_per_client=3)
    holder = RawH2(gateway.port)
    held: list[int] = []
    try:
        for _ in range(5):
            stream_id = holder.conn.get_next_available_stream_id()
            holder.conn.send_headers(stream_id, grpc_headers(gateway.port, "/inventory.v1.InventoryService/CheckStock"))
            holder.flush()
            held.append(stream_id)
        refused = [await asyncio.to_thread(holder.wait_status, stream_id, 3.0) for stream_id in held[3:]]
        assert [status and status[0] for status in refused] == ["8", "8"], f"streams past the budget: {refused}"
        assert all(status and "limits.max_calls_per_client" in status[1] for status in refused)
        assert all(stream_id not in holder.statuses for stream_id in held[:3]), "the first three are held open"

        anonymous = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, timeout=5)
        assert anonymous.code == grpc.StatusCode.RESOURCE_EXHAUSTED, anonymous
        assert "address 127.0.0.1 already has 3 calls running" in anonymous.details
        signed_in = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, token=gw_stack.token(), timeout=5)
        assert signed_in.ok, signed_in

        holder.conn.reset_stream(held[0], h2.errors.ErrorCodes.CANCEL)
        holder.flush()
        for _ in range(50):  # the cancellation reaches the route and releases the slot
            again = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, timeout=5)
            if again.ok:
                break
            await asyncio.sleep(0.05)
        assert again.ok, again
    finally:
        holder.close()
    calls = gateway._services.client_calls
    for _ in range(100):  # the closed connection's streams end
        if calls.running("address 127.0.0.1") == 0:
            break
        await asyncio.sleep(0.05)
    assert calls.running("address 127.0.0.1") == 0, "every slot is released"


async def test_anonymous_callers_from_many_addresses_leave_room_for_callers_with_credentials(
    gw_stack: GatewayStack,
) -> None:
    """Idle CheckStock streams without credentials from four addresses, each within its own
    ``max_calls_per_client``: past ``max_anonymous_calls`` they are refused, naming it, while a
    caller with credentials is served; the slots come back as the connections close."""
    CHECK_STOCK = "/inventory.v1.InventoryService/CheckStock"
    gateway, client = await _gateway(gw_stack, max_concurrent_calls=10, max_calls_per_client=3, max_anonymous_calls=6)
    holders = [RawH2(gateway.port, source=f"127.0.0.{n}") for n in (2, 3, 4, 5)]
    held: list[tuple[RawH2, int]] = []
    try:
        for holder in holders:
            for _ in range(3):
                stream_id = holder.conn.get_next_available_stream_id()
                holder.conn.send_headers(stream_id, grpc_headers(gateway.port, CHECK_STOCK))
                holder.flush()
                held.append((holder, stream_id))
                await asyncio.sleep(0.02)  # in order: the first addresses get in
        ended = [await asyncio.to_thread(holder.wait_status, stream_id, 0.5) for holder, stream_id in held]
        assert ended[:6] == [None] * 6, "the first six are held open"
        assert [status and status[0] for status in ended[6:]] == ["8"] * 6, f"past the budget: {ended[6:]}"
        assert all(status and "limits.max_anonymous_calls" in status[1] for status in ended[6:])
        signed_in = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, token=gw_stack.token(), timeout=5)
        assert signed_in.ok, signed_in
        anonymous = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, timeout=5)
        assert anonymous.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_anonymous_calls" in anonymous.details
    finally:
        for holder in holders:
            holder.close()
    calls = gateway._services.client_calls
    for _ in range(100):  # the closed connections' streams end
        if calls.running_anonymous() == 0:
            break
        await asyncio.sleep(0.05)
    assert calls.running_anonymous() == 0, "every slot is released"
    assert (await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, timeout=5)).ok


async def test_requests_sent_a_byte_at_a_time_cannot_lock_callers_out(gw_stack: GatewayStack) -> None:
    """Unary calls whose request never finishes arriving, without credentials, on several
    connections: grpc.aio would hold each in a call slot until its connection's age (the
    attacker filled all of ``max_concurrent_calls`` and every caller got grpc's "Concurrent RPC
    limit exceeded!"). The gateway sees each call as its headers arrive: one address gets
    ``max_calls_per_client`` of them, a call to a method that needs credentials is refused
    before its body, and a request that does not arrive within the method's timeout ends
    DEADLINE_EXCEEDED."""
    gateway, client = await _gateway(gw_stack, max_concurrent_calls=20, max_calls_per_client=8)
    reserve = "/inventory.v1.InventoryService/Reserve"  # needs the role inventory:write
    attackers = [RawH2(gateway.port) for _ in range(3)]
    half_sent: list[tuple[RawH2, int]] = []
    protected: list[tuple[RawH2, int]] = []
    try:
        for attacker in attackers:
            for n in range(10):
                stream_id = attacker.conn.get_next_available_stream_id()
                attacker.conn.send_headers(stream_id, grpc_headers(gateway.port, reserve if n % 2 else GET_STOCK))
                attacker.conn.send_data(stream_id, grpc_message(b"y" * 50, declared=100))
                (protected if n % 2 else half_sent).append((attacker, stream_id))
            attacker.flush()
        await asyncio.sleep(0.3)
        for attacker in attackers:
            await asyncio.to_thread(attacker.pump, 0.1)
        reply = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, token=gw_stack.token(), timeout=5)
        assert reply.ok, f"an authenticated caller is served: {reply}"

        unauthenticated = [attacker.statuses.get(stream_id) for attacker, stream_id in protected]
        assert {status and status[0] for status in unauthenticated} == {"16"}, unauthenticated
        budget = [attacker.statuses.get(stream_id) for attacker, stream_id in half_sent]
        refused = [status for status in budget if status is not None]
        assert len(refused) == 15 - 8, f"one address holds {8} half-sent calls, no more: {budget}"
        assert all(status[0] == "8" and "limits.max_calls_per_client" in status[1] for status in refused)

        await asyncio.sleep(1.0)  # GetStock's timeout is 1 s
        for attacker in attackers:
            await asyncio.to_thread(attacker.pump, 0.1)
        held = [attacker.statuses.get(stream_id) for attacker, stream_id in half_sent]
        timed_out = [status for status in held if status is not None and status[0] == "4"]
        assert len(timed_out) == 8, f"the held calls end at the method's timeout: {held}"
        assert "did not arrive within 1 s" in timed_out[0][1]
        assert await _served(client), "and the address may call again"
    finally:
        for attacker in attackers:
            attacker.close()


async def test_answers_a_caller_never_lets_in_count_against_its_budget(gw_stack: GatewayStack) -> None:
    """Whole requests on a connection whose window for answers is 0: each handler returns at
    once, but grpc keeps the call (and its slot of ``max_concurrent_calls``) while the answer
    cannot be sent. The client's budget is released only when grpc ends the call, so the
    address holds ``max_calls_per_client`` of them, and an authenticated caller is served."""
    gateway, client = await _gateway(gw_stack, max_concurrent_calls=20, max_calls_per_client=8)
    holder = RawH2(gateway.port)
    holder.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    holder.flush()
    await asyncio.to_thread(holder.pump, 0.1)
    request = grpc_message(b"\n\x08WIDGET-1")
    try:
        streams = []
        for _ in range(30):
            stream_id = holder.conn.get_next_available_stream_id()
            holder.conn.send_headers(stream_id, grpc_headers(gateway.port, GET_STOCK))
            holder.conn.send_data(stream_id, request, end_stream=True)
            streams.append(stream_id)
        holder.flush()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(holder.pump, 0.2)
        refused = [holder.statuses[s] for s in streams if s in holder.statuses]
        assert len(refused) == 30 - 8, f"the address holds 8 unanswerable calls, no more: {len(refused)} refused"
        assert all(status[0] == "8" and "limits.max_calls_per_client" in status[1] for status in refused), refused
        reply = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, token=gw_stack.token(), timeout=5)
        assert reply.ok, f"an authenticated caller is served: {reply}"
    finally:
        holder.close()
    calls = gateway._services.client_calls
    for _ in range(100):  # grpc ends the held calls with their connection
        if calls.running("address 127.0.0.1") == 0:
            break
        await asyncio.sleep(0.05)
    assert calls.running("address 127.0.0.1") == 0


async def test_a_unary_call_without_a_whole_request_is_invalid(gw_stack: GatewayStack) -> None:
    """No message (the headers end the stream), or half of one then the end: INVALID_ARGUMENT at
    once, naming the method, and nothing reaches the worker."""
    gateway, _ = await _gateway(gw_stack)
    caller = RawH2(gateway.port)
    try:
        empty = caller.conn.get_next_available_stream_id()
        caller.conn.send_headers(empty, grpc_headers(gateway.port, GET_STOCK), end_stream=True)
        cut = caller.conn.get_next_available_stream_id()
        caller.conn.send_headers(cut, grpc_headers(gateway.port, GET_STOCK))
        caller.conn.send_data(cut, grpc_message(b"\n\x08WIDGET-1")[:6], end_stream=True)
        caller.flush()
        for stream_id in (empty, cut):
            status = await asyncio.to_thread(caller.wait_status, stream_id, 3.0)
            assert status == ("3", f"the call to {GET_STOCK} ended without a whole request message"), status
    finally:
        caller.close()


async def test_the_time_a_request_takes_to_arrive_counts_against_its_method_timeout(gw_stack: GatewayStack) -> None:
    """probe.Stall (timeout 0.3 s) sleeping 0.05 s: answered when its request comes at once,
    DEADLINE_EXCEEDED when the request took 0.28 s to arrive (the call is not given its whole
    timeout again once the request is in)."""
    await gw_stack.worker("probe", tree=PROBE_MODULES_DIR)
    gateway, _ = await _gateway(gw_stack)
    await gateway.wait_ready(["probe"], timeout=10.0)
    auth = ("authorization", f"Bearer {gw_stack.token()}")
    message = grpc_message(b"\t" + struct.pack("<d", 0.05))  # probe.Stall{seconds: 0.05}
    caller = RawH2(gateway.port)

    def stall(arriving: float) -> tuple[str, str] | None:
        stream_id = caller.conn.get_next_available_stream_id()
        caller.conn.send_headers(stream_id, grpc_headers(gateway.port, "/probe.v1.ProbeService/Stall", auth))
        caller.conn.send_data(stream_id, message[:3])
        caller.flush()
        time.sleep(arriving)
        caller.conn.send_data(stream_id, message[3:], end_stream=True)
        caller.flush()
        return caller.wait_status(stream_id, 5.0)

    try:
        assert await asyncio.to_thread(stall, 0.0) == ("0", "")
        late = await asyncio.to_thread(stall, 0.28)
        assert late is not None and late[0] == "4", late
    finally:
        caller.close()


async def test_a_client_that_cancels_some_calls_keeps_its_connection(gw_stack: GatewayStack) -> None:
    """Cancelling is normal: a connection is closed only when most of its streams are reset."""
    gateway, _ = await _gateway(gw_stack, max_reset_streams=20, reset_check_interval=0.05)
    caller = RawH2(gateway.port)
    request = grpc_message(b"\n\x08WIDGET-1")
    try:
        for n in range(90):  # one in three reset before its answer: 30 resets, past max_reset_streams
            stream_id = caller.conn.get_next_available_stream_id()
            caller.conn.send_headers(stream_id, grpc_headers(gateway.port, GET_STOCK))
            if n % 3 == 0:
                caller.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            else:
                caller.conn.send_data(stream_id, request, end_stream=True)
            caller.flush()
            await asyncio.to_thread(caller.pump, 0.02)
        await asyncio.sleep(0.5)  # several looks of the guard
        await asyncio.to_thread(caller.pump, 0.1)
        assert not caller.closed and caller.goaway is None
        assert caller.ended >= 50, "the calls it did not cancel were answered"
        assert _nothing_closed_nor_banned(gateway)
    finally:
        caller.close()


async def test_a_message_declared_too_large_is_refused_before_its_body_arrives(gw_stack: GatewayStack) -> None:
    """The length prefix alone decides: a 64 MiB message is refused after 1 KB of it, so the
    rest is never buffered (``max_message_bytes``, grpc.max_receive_message_length)."""
    await gw_stack.worker("inventory")
    gateway = await gw_stack.gateway(ready=["inventory"], max_message_bytes=1 << 20)
    sender = RawH2(gateway.port)
    try:
        stream_id = sender.conn.get_next_available_stream_id()
        sender.conn.send_headers(stream_id, grpc_headers(gateway.port, GET_STOCK))
        sender.conn.send_data(stream_id, grpc_message(b"y" * 1000, declared=64 << 20))
        sender.flush()
        status = await asyncio.to_thread(sender.wait_status, stream_id, 5.0)
        assert status is not None, "answered without the rest of the message"
        assert status[0] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]), status
        assert "67108864" in status[1] and "1048576" in status[1], status
        assert await _served(gw_stack.client(gateway))
    finally:
        sender.close()


async def test_a_client_pinging_too_often_is_sent_away(gw_stack: GatewayStack) -> None:
    """Pings closer together than ``min_client_ping_interval`` are strikes; past
    ``max_ping_strikes`` the gateway answers GOAWAY too_many_pings."""
    gateway, client = await _gateway(gw_stack, min_client_ping_interval=10.0, max_ping_strikes=2)
    pinger = RawH2(gateway.port)
    try:
        for n in range(10):
            if pinger.goaway is not None or pinger.closed:
                break
            pinger.conn.ping(b"%08d" % n)
            pinger.flush()
            await asyncio.to_thread(pinger.pump, 0.05)
        assert await asyncio.to_thread(pinger.wait_closed, 5.0)
        assert pinger.goaway is not None, "told why"
        assert pinger.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert pinger.goaway.additional_data == b"too_many_pings"
        assert await _served(client)
    finally:
        pinger.close()


async def test_half_sent_messages_are_cut_off_with_their_connection(gw_stack: GatewayStack) -> None:
    """Streams whose message never finishes arriving hold their bytes only until the connection's
    age and grace: then the connection is cut, while another caller is served throughout."""
    gateway, client = await _gateway(gw_stack, max_connection_age=1.0, max_connection_age_grace=1.0)
    attacker = RawH2(gateway.port)
    started = time.monotonic()
    try:
        streams = []
        for _ in range(10):
            stream_id = attacker.conn.get_next_available_stream_id()
            attacker.conn.send_headers(stream_id, grpc_headers(gateway.port, GET_STOCK))
            attacker.conn.send_data(stream_id, grpc_message(b"y" * 5000, declared=1 << 20))
            streams.append(stream_id)
        attacker.flush()
        assert await _served(client), "served while the half-sent messages wait"
        while not attacker.closed and time.monotonic() - started < 8:
            await asyncio.to_thread(attacker.pump, 0.1)
        assert attacker.closed, "the connection is cut by its age and grace (2 s here), not left to pin its bytes"
        assert all(attacker.statuses.get(s, ("", ""))[0] != "0" for s in streams), "no half-sent call ran"
        assert await _served(client)
    finally:
        attacker.close()


async def test_a_client_that_never_reads_its_answers_can_send_only_a_window_per_stream(
    gw_stack: GatewayStack,
) -> None:
    """A bidirectional stream whose caller keeps sending and never reads an answer (its window
    for them is one byte): the answers stop at the gateway, the worker stops taking requests,
    and the caller can send only about a stream window more (``stream_window_bytes``), not the
    megabytes grpc's growing windows let in (12 MB a stream before the window was fixed)."""
    gateway, client = await _gateway(gw_stack, stream_window_bytes=64 * 1024)
    sender = RawH2(gateway.port)
    sender.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1})
    request = grpc_message(b"\n\x08WIDGET-1")  # inventory.CheckStock{sku}
    streams = {}
    for _ in range(4):
        stream_id = sender.conn.get_next_available_stream_id()
        sender.conn.send_headers(stream_id, grpc_headers(gateway.port, "/inventory.v1.InventoryService/CheckStock"))
        streams[stream_id] = 0
    sender.flush()

    def send_for(seconds: float) -> None:
        give_up = time.monotonic() + seconds
        while time.monotonic() < give_up and not sender.closed:
            for stream_id in streams:
                room = min(sender.conn.local_flow_control_window(stream_id), sender.conn.max_outbound_frame_size)
                count = room // len(request)
                if count:
                    sender.conn.send_data(stream_id, request * count)
                    streams[stream_id] += count * len(request)
            sender.flush()
            sender.pump(0.02)  # answers pings and settings; never acknowledges an answer's bytes

    try:
        await asyncio.to_thread(send_for, 3.0)
        assert await _served(client), "another caller is served meanwhile"
        for _ in range(10):  # the windows on the way (the caller's, the gateway's, the lane's) fill
            held = dict(streams)
            await asyncio.to_thread(send_for, 1.0)
            if streams == held:
                break
        assert max(streams.values()) < 512 * 1024, f"bytes taken per stream: {streams}"
        assert streams == held, "nothing more is taken once the window is used up"
        assert not sender.closed, f"closed: {sender.goaway}"
    finally:
        sender.close()


async def test_a_client_that_stops_reading_mid_stream_is_cut_off_at_the_keepalive_timeout(
    gw_stack: GatewayStack,
) -> None:
    """A caller that opened streams, sent, and then reads nothing at all (so never answers a
    ping) is cut off once a keepalive ping goes unanswered for ``keepalive_timeout`` (grpc's own
    ping timeout would wait a minute), though the gateway has nothing else to send it."""
    gateway, client = await _gateway(gw_stack, keepalive_time=1.0, keepalive_timeout=1.0)
    silent = RawH2(gateway.port)
    silent.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1})
    for _ in range(10):
        stream_id = silent.conn.get_next_available_stream_id()
        silent.conn.send_headers(stream_id, grpc_headers(gateway.port, "/inventory.v1.InventoryService/CheckStock"))
        silent.conn.send_data(stream_id, grpc_message(b"\n\x08WIDGET-1"))
    silent.flush()
    await asyncio.to_thread(silent.pump, 0.2)  # the server's settings, then silence
    try:
        assert await asyncio.to_thread(closed_within, silent.sock, 15.0), "the silent client is cut off"
        assert await _served(client)
    finally:
        silent.close()


async def test_a_call_with_too_many_headers_is_refused_whether_or_not_settings_were_acknowledged(
    gw_stack: GatewayStack,
) -> None:
    """2,000 small headers (about 74 KB as HTTP/2 counts them) are past ``max_metadata_bytes``.
    grpc core refuses them only once the client has acknowledged the server's settings; before
    that (a client that never does) they reached the gateway's Python, 46 ms of CPU a call at
    10,000. The route refuses them before reading one, naming the setting; a call with ordinary
    headers passes either way."""
    gateway, client = await _gateway(gw_stack, max_metadata_bytes=16 * 1024)
    sender = RawH2(gateway.port)  # sends at once: it has not read, so not acknowledged, the settings
    request = grpc_message(b"\n\x08WIDGET-1")
    many = [(f"x-h{i}", "v") for i in range(2000)]

    async def call(*extra: tuple[str, str]) -> tuple[str, str] | None:
        stream_id = sender.conn.get_next_available_stream_id()
        sender.conn.send_headers(stream_id, grpc_headers(gateway.port, GET_STOCK, *extra))
        sender.conn.send_data(stream_id, request, end_stream=True)
        sender.flush()
        return await asyncio.to_thread(sender.wait_status, stream_id, 5.0)

    exhausted = str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    try:
        status = await call(*many)
        assert status is not None and status[0] == exhausted, status
        assert "2000 headers" in status[1] and "limits.max_metadata_bytes" in status[1], status
        assert await call(("x-h", "v" * 1000)) == ("0", "")
        await asyncio.to_thread(sender.pump, 0.2)  # settings read and acknowledged: grpc's own limit
        for _ in range(3):
            status = await call(*many)
            assert status is not None and status[0] == exhausted, status
        assert await _served(client)
    finally:
        sender.close()


async def test_a_client_stream_whose_caller_hangs_up_is_undone_not_committed(gw_stack: GatewayStack) -> None:
    """A RestockBatch whose caller sends lines and then drops its connection, without closing
    its side of the stream: grpc.aio ends the gateway's request iterator as if it had (the
    attacker saw such batches committed, audited "ok"); the gateway waits for the hang-up's
    cancellation, so the worker's handler is cancelled and its undo steps run. A batch that
    does half-close is committed."""
    gateway, client = await _gateway(gw_stack)
    auth = ("authorization", f"Bearer {gw_stack.token('inventory:write')}")
    line = grpc_message(b"\n\x08WIDGET-1\x10\x03")  # inventory.Restock{sku, quantity: 3}

    async def stock() -> int:
        reply = await client.call("inventory", "GetStock", {"sku": "WIDGET-1"}, timeout=5)
        assert reply.ok and reply.body is not None, reply
        return int(reply.body["available"])

    def restock(half_close: bool) -> tuple[str, str] | None:
        caller = RawH2(gateway.port)
        try:
            stream_id = caller.conn.get_next_available_stream_id()
            caller.conn.send_headers(stream_id, grpc_headers(gateway.port, "/inventory.v1.InventoryService/RestockBatch", auth))
            caller.conn.send_data(stream_id, line * 5, end_stream=half_close)
            caller.flush()
            if half_close:
                return caller.wait_status(stream_id, 5.0)
            caller.pump(0.5)  # the lines are taken in and applied
            return None
        finally:
            caller.close()  # for the hanging caller: gone, its stream never closed

    before = await stock()
    for _ in range(3):
        assert await asyncio.to_thread(restock, False) is None
    await asyncio.sleep(1.0)  # the undo steps run
    assert await stock() == before, "an abandoned batch is taken back"
    assert await asyncio.to_thread(restock, True) == ("0", "")
    assert await stock() == before + 15, "a finished batch is kept"
