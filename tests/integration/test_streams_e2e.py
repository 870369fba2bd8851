"""Streams end to end with real processes: ``modrpc worker feed`` and two ``modrpc gateway`` s.

One gateway reaches the worker over its lane, the other over gRPC (``MODRPC_LANE=false``), and
the tests also call the worker directly, over mutual TLS as the gateway does (with the
deployment's ``gateway`` certificate and a principal header; a worker serves nothing else), so
every streaming shape is checked on each path a stream can take: order, trailers with ``x-request-id``, a bad message mid-stream, a caller that
hangs up (the handler's cleanup runs in the worker), a deadline, a caller pinned to the old
version (every message transformed), policy once per stream, and a slow reader that must not
make the gateway buffer (its RSS is read from ``/proc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runtime.manifest import load_module
from runtime.versions import VersionCatalog
from runtime.worker import load_catalog
from tests.conftest import make_dial
from tests.fixtures.gateway_modules.commands import (
    Command,
    free_port,
    isolated_env,
    start,
    stop,
    token,
)
from tests.fixtures.gateway_modules.feeds import FeedClient

PATHS = ("gateway-lane", "gateway-grpc", "worker")
OLD = "2025-01-15"


@dataclass
class Deployment:
    addresses: dict[str, str]
    gateway_pids: dict[str, int]
    catalog: VersionCatalog
    tls: Path
    """The deployment's TLS folder (its development CA and identities)."""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, gw_modules: dict[str, Path]) -> Iterator[Deployment]:
    """A worker of ``feed`` and two gateways on one SQLite store, for the whole module."""
    tmp = tmp_path_factory.mktemp("streams-e2e")
    tree = gw_modules["streams"]
    loop = asyncio.new_event_loop()
    commands: list[Command] = []

    async def up() -> Deployment:
        worker = await start(tmp, "worker", "feed", "--modules", str(tree))
        commands.append(worker)
        line = await worker.line_with("modrpc-worker-ready feed", within=60)
        addresses = {"worker": line.split()[-1]}
        pids = {}
        for name, lane in (("gateway-lane", "true"), ("gateway-grpc", "false")):
            port = free_port()
            os.environ["MODRPC_LANE"] = lane  # isolated_env copies the environment
            try:
                gateway = await start(tmp, "gateway", "--port", str(port))
            finally:
                del os.environ["MODRPC_LANE"]
            commands.append(gateway)
            await gateway.line_with("ready", within=60)
            addresses[name] = f"127.0.0.1:{port}"
            pids[name] = gateway.process.pid
        return Deployment(addresses, pids, load_catalog(load_module(tree / "feed")), tmp / "tls")

    try:
        yield loop.run_until_complete(up())
    finally:
        for command in reversed(commands):
            loop.run_until_complete(stop(command))
        loop.close()
    assert isolated_env(tmp)  # the processes kept their state under tmp


def connect(deployment: Deployment, path: str) -> grpc.aio.Channel:
    """A channel to a gateway (plaintext, its edge) or to the worker (mutual TLS, as the gateway)."""
    if path == "worker":
        return make_dial(deployment.tls)(deployment.addresses[path], "feed")
    return grpc.aio.insecure_channel(deployment.addresses[path])


@pytest.fixture(params=PATHS)
async def feed(request: pytest.FixtureRequest, deployment: Deployment) -> AsyncIterator[FeedClient]:
    async with connect(deployment, request.param) as ch:
        yield FeedClient(ch, deployment.catalog)


def key() -> str:
    return f"k-{uuid.uuid4().hex[:10]}"


async def settled(feed: FeedClient, name: str, **expected: int) -> dict[str, Any]:
    """What ran for ``name`` once the worker reports ``expected`` (cleanup may finish just after
    the caller saw the end), or what it reports after 5 s."""
    tally = await feed.ran(name)
    for _ in range(100):
        if all(tally[k] == v for k, v in expected.items()):
            break
        await asyncio.sleep(0.05)
        tally = await feed.ran(name)
    return tally


# -- each shape, in order, with trailers --------------------------------------------------------


async def test_a_server_stream_arrives_in_order_with_the_request_id_in_its_trailers(feed: FeedClient) -> None:
    name, rid = key(), uuid.uuid4().hex
    messages, trailers = await feed.collect("Count", [{"heading": name, "upto": 300}], metadata=[("x-request-id", rid)])
    assert [m["n"] for m in messages] == list(range(1, 301))
    assert {m["heading"] for m in messages} == {name}
    assert trailers["x-request-id"] == rid
    tally = await settled(feed, name, after=1, cleaned=1)
    assert (tally["before"], tally["after"], tally["caught"], tally["cleaned"], tally["closed"]) == (1, 1, 0, 1, 1)


async def test_a_client_stream_is_read_whole_and_answered_once(feed: FeedClient) -> None:
    name = key()
    entries = [{"heading": name, "n": n} for n in range(200)]
    writer = [("authorization", f"Bearer {token('feed:write')}")]
    messages, trailers = await feed.collect("Total", entries, metadata=writer)
    assert messages == [{"heading": name, "count": 200, "sum": sum(range(200))}]
    assert trailers["x-request-id"]
    tally = await settled(feed, name, after=1)
    assert (tally["before"], tally["after"], tally["cleaned"]) == (1, 1, 1)


async def test_a_bidirectional_stream_answers_each_message_before_the_next_is_sent(feed: FeedClient) -> None:
    name = key()
    call = feed.open("Echo")
    for n in range(5):
        await call.write(feed.encode("Echo", {"heading": name, "n": n}))
        answer = feed.decode("Echo", await call.read())
        assert answer["n"] == n + 1  # answered while the stream is still open
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


# -- failures mid-stream ------------------------------------------------------------------------


async def test_an_invalid_response_message_mid_stream_ends_it_internal_after_the_good_ones(feed: FeedClient) -> None:
    name = key()
    call = feed.open("Count", [{"heading": name, "upto": 10, "bad_at": 4}])
    got = []
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for payload in call:
            got.append(feed.decode("Count", payload)["n"])
    assert got == [1, 2, 3]
    assert failure.value.code() == grpc.StatusCode.INTERNAL
    assert "request id" in (failure.value.details() or "")  # no internals, just what to quote
    tally = await settled(feed, name, caught=1, compensated=1, cleaned=1)
    assert (tally["caught"], tally["compensated"], tally["cleaned"], tally["after"]) == (1, 1, 1, 0)


async def test_an_invalid_request_message_mid_stream_is_invalid_argument_naming_the_field(feed: FeedClient) -> None:
    name = key()
    writer = [("authorization", f"Bearer {token('feed:write')}")]
    call = feed.open("Total", metadata=writer)
    for n in (1, 2, -5):  # the third is refused; the call ends there, with no half-close
        await call.write(feed.encode("Total", {"heading": name, "n": n}))
    assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "n: expected integer >= 0, got -5" in (await call.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call.read()
    status = rpc_status.from_call(failure.value)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["n"]
    tally = await settled(feed, name, caught=1, cleaned=1)
    assert (tally["caught"], tally["compensated"], tally["cleaned"], tally["closed"]) == (1, 1, 1, 1)


async def test_a_handler_error_mid_stream_keeps_its_status(feed: FeedClient) -> None:
    name = key()
    messages: list[int] = []
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for payload in feed.open("Count", [{"heading": name, "upto": 10, "fail_at": 3}]):
            messages.append(feed.decode("Count", payload)["n"])
    assert messages == [1, 2]
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"count {name} refused to send 3" in (failure.value.details() or "")


# -- the caller hangs up, or runs out of time ---------------------------------------------------


async def test_a_caller_that_hangs_up_stops_the_handler_and_its_cleanup_runs(feed: FeedClient) -> None:
    name = key()
    call = feed.open("Count", [{"heading": name, "upto": 1_000_000, "pause": 0.01}], timeout=30)
    for _ in range(3):
        await call.read()
    call.cancel()
    tally = await settled(feed, name, closed=1, cleaned=1, compensated=1)
    assert (tally["closed"], tally["cleaned"], tally["compensated"], tally["after"]) == (1, 1, 1, 0)
    sent = tally["sent"]
    await asyncio.sleep(0.3)
    assert (await feed.ran(name))["sent"] == sent  # it stopped, not merely fell behind


async def test_a_deadline_ends_the_stream_and_the_handler_with_its_cleanup(feed: FeedClient) -> None:
    name = key()
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await feed.collect("Count", [{"heading": name, "upto": 1000, "pause": 0.05}], timeout=0.6)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    tally = await settled(feed, name, closed=1, cleaned=1)
    assert (tally["closed"], tally["cleaned"], tally["after"]) == (1, 1, 0)
    assert 3 <= tally["sent"] <= 14


# -- versions and policy ------------------------------------------------------------------------


async def test_a_caller_pinned_to_the_old_version_gets_every_message_in_its_shape(feed: FeedClient) -> None:
    name = key()
    messages, _ = await feed.collect("Count", [{"title": name, "upto": 5}], version=OLD)
    assert messages == [{"title": name, "n": n, "padding": ""} for n in range(1, 6)]
    call = feed.open("Echo", version=OLD)
    for n in range(3):
        await call.write(feed.encode("Echo", {"title": name, "n": n}, OLD))
        assert feed.decode("Echo", await call.read(), OLD) == {"title": name, "n": n + 1, "padding": ""}
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF


async def test_the_gateway_checks_roles_once_per_stream(deployment: Deployment) -> None:
    for path in ("gateway-lane", "gateway-grpc"):
        async with grpc.aio.insecure_channel(deployment.addresses[path]) as channel:
            feed = FeedClient(channel, deployment.catalog)
            reader = [("authorization", f"Bearer {token('feed:read')}")]
            # Refused as the stream opens, before any message: nothing is written (a grpc.aio
            # client still writing when the server ends the call reports its own INTERNAL).
            refused = feed.open("Total", metadata=reader)
            assert await refused.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "feed:write" in (await refused.details() or "")
            assert dict(await refused.trailing_metadata() or ())["x-request-id"]
            assert await feed.open("Total").code() == grpc.StatusCode.UNAUTHENTICATED


# -- flow control -------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.parametrize("path", ["gateway-lane", "gateway-grpc"])
async def test_a_slow_reader_holds_the_handler_back_and_the_gateway_buffers_nothing_unbounded(
    deployment: Deployment, path: str
) -> None:
    """A reader that takes nothing for 3 s while the handler could send 2 GB (200 000 messages of
    10 kB): the handler is held a few windows ahead, and the gateway's RSS barely moves."""
    async with grpc.aio.insecure_channel(deployment.addresses[path]) as channel:
        feed = FeedClient(channel, deployment.catalog)
        pid = deployment.gateway_pids[path]
        name = key()
        before = rss_mb(pid)
        call = feed.open("Count", [{"heading": name, "upto": 200_000, "size": 10_000}], timeout=60)
        first = feed.decode("Count", await call.read())
        assert first["n"] == 1
        await asyncio.sleep(3.0)
        held = (await feed.ran(name))["sent"]
        grown = rss_mb(pid) - before
        assert held < 1500, f"the handler ran {held} messages ahead of a reader that read one"
        assert grown < 48, f"the gateway grew by {grown:.1f} MB while its caller read nothing"
        for _ in range(2000):  # reading lets the handler go on
            await call.read()
        assert (await feed.ran(name))["sent"] >= 2001
        call.cancel()
        tally = await settled(feed, name, closed=1, cleaned=1)
        assert tally["closed"] == 1
        with contextlib.suppress(asyncio.CancelledError):
            await call.code()
