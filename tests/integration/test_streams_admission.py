"""Who a worker admits to a stream, over gRPC and over its lane: as it admits a unary call.

A ``feed`` worker on real sockets in this process, reached over mutual TLS by each identity the
session's CA can issue. Each stream is admitted (or refused) as it opens, from the peer its
transport proved and, from the gateway or a module only, the ``x-modrpc-principal`` header:

* the gateway: the principal it sends, whose roles it checked;
* ``module:relay``, which declared ``feed``: the caller it carries, ``via`` relay, whose roles
  ``Total`` checks (``inner_roles`` is ``caller`` by default);
* ``module:inventory``, which did not: refused, whatever principal it carries;
* ``client:developer``: itself, with the roles ``tls.client_roles`` gives it (none here), the
  header ignored; a refusal is written to the audit trail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from runtime.config import Settings
from runtime.deadline import Deadline
from runtime.identity import Peer
from runtime.lane import LaneClient
from runtime.tls import InternalTls
from runtime.transport import CallError
from runtime.wire import method_path
from runtime.worker import Worker
from tests.conftest import StartWorker, make_dial, principal_says
from tests.fixtures.gateway_modules.feeds import FeedClient

TRANSPORTS = ("grpc", "lane")
ROOT = principal_says("root", "feed:write", "admin")
"""What a forger would claim."""


@pytest.fixture
async def feed(
    start_worker: StartWorker, worker_settings: Callable[..., Settings], gw_modules: dict[str, Path]
) -> Worker:
    tree = gw_modules["streams"]
    return await start_worker("feed", settings=worker_settings(modules_dir=tree), modules_dir=tree)


async def stream(
    worker: Worker,
    tls_dir: Path,
    transport: str,
    peer: Peer,
    method: str,
    requests: Sequence[dict[str, Any]] | None,
    metadata: Sequence[tuple[str, str]] = (),
) -> list[dict[str, Any]]:
    """Every answer of one ``feed`` stream made straight to ``worker`` as ``peer``; a refusal
    raises ``CallError`` (the lane) or ``grpc.aio.AioRpcError`` (gRPC).

    ``requests`` None sends nothing and waits for the worker's answer: a stream refused as it
    opens is then seen with its status (a grpc.aio client still writing when the server ends
    the call reports an INTERNAL of its own instead)."""
    assert worker.service is not None and worker.lane_address is not None
    catalog = worker.service.catalog
    if transport == "grpc":
        dial = make_dial(tls_dir)
        async with dial(worker, as_peer=peer) as channel:
            feed = FeedClient(channel, catalog)
            call = feed.open(method, requests, metadata=metadata)
            return [feed.decode(method, message) async for message in call]
    codec = FeedClient(None, catalog)  # type: ignore[arg-type]  # for encode/decode only

    async def encoded() -> AsyncIterator[bytes]:
        if requests is None:
            await asyncio.Event().wait()
        for request in requests or ():
            yield codec.encode(method, request)

    tls = InternalTls.load(tls_dir, peer, dev_ca=True)
    async with LaneClient(worker.lane_address, tls=tls, server=Peer.module("feed")) as lane:
        call = lane.stream(method_path("feed", method), encoded(), metadata, Deadline.after(10))
        try:
            return [codec.decode(method, message) async for message in call]
        finally:
            await call.aclose()


def refusal(caught: pytest.ExceptionInfo[BaseException]) -> tuple[grpc.StatusCode, str]:
    error = caught.value
    if isinstance(error, CallError):
        return error.code, error.details
    assert isinstance(error, grpc.aio.AioRpcError)
    return error.code(), error.details() or ""


REFUSED = (CallError, grpc.aio.AioRpcError)


async def ran(worker: Worker, tls_dir: Path, key: str) -> dict[str, Any]:
    assert worker.service is not None
    async with make_dial(tls_dir)(worker) as channel:
        return await FeedClient(channel, worker.service.catalog).ran(key)


def entries(key: str) -> list[dict[str, Any]]:
    return [{"heading": key, "n": n} for n in (1, 2, 3)]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_gateway_streams_for_the_principal_it_sends(feed: Worker, tls_dir: Path, transport: str) -> None:
    key = f"gateway-{transport}"
    says = [principal_says("ada", "feed:write")]
    answers = await stream(feed, tls_dir, transport, Peer.gateway(), "Total", entries(key), says)
    assert answers == [{"heading": key, "count": 3, "sum": 6}]
    assert (await ran(feed, tls_dir, key))["caller"] == "jwt:ada"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_declared_module_streams_for_its_caller_whose_roles_are_checked(
    feed: Worker, tls_dir: Path, transport: str
) -> None:
    relay = Peer.module("relay")
    key = f"relay-{transport}"
    with pytest.raises(REFUSED) as caught:
        await stream(feed, tls_dir, transport, relay, "Total", None, [principal_says("ada")])
    code, details = refusal(caught)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details.startswith("missing role 'feed:write' (relay called feed on behalf of 'ada'")
    says = [principal_says("ada", "feed:write")]
    answers = await stream(feed, tls_dir, transport, relay, "Total", entries(key), says)
    assert answers == [{"heading": key, "count": 3, "sum": 6}]
    assert (await ran(feed, tls_dir, key))["caller"] == "jwt:ada via relay"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_module_that_did_not_declare_feed_opens_no_stream(feed: Worker, tls_dir: Path, transport: str) -> None:
    with pytest.raises(REFUSED) as caught:
        await stream(feed, tls_dir, transport, Peer.module("inventory"), "Echo", None, [ROOT])
    code, details = refusal(caught)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "module 'inventory' did not declare capability modules=['feed']" in details


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_developer_streams_as_itself_and_a_forged_principal_is_refused_and_audited(
    feed: Worker, tls_dir: Path, transport: str
) -> None:
    developer = Peer.client("developer")
    key = f"developer-{transport}"
    counted = await stream(feed, tls_dir, transport, developer, "Count", [{"heading": key, "upto": 2}], [ROOT])
    assert [m["n"] for m in counted] == [1, 2]  # a public method
    assert (await ran(feed, tls_dir, key))["caller"] == "mtls:developer"  # not root
    with pytest.raises(REFUSED) as caught:
        await stream(feed, tls_dir, transport, developer, "Total", None, [ROOT])
    assert refusal(caught) == (grpc.StatusCode.PERMISSION_DENIED, "missing role 'feed:write'")
    assert feed.store is not None
    for _ in range(50):  # audit records are written asynchronously
        records = [r for _, r in await feed.store.read("audit", limit=100_000)]
        refused = [
            r for r in records
            if r["outcome"] == "PERMISSION_DENIED" and r["principal"]["subject"] == "client:developer"
            and r["method"] == "/feed.v1.FeedService/Total"
        ]  # fmt: skip
        if refused:
            break
        await asyncio.sleep(0.1)
    assert refused and [e["kind"] for e in refused[-1]["events"]] == ["refused"]


async def test_a_stream_with_no_proven_peer_is_unauthenticated_whatever_it_claims(feed: Worker) -> None:
    """The endpoint itself, as a transport would call it had it proved no one: nothing opens."""
    assert feed.service is not None

    async def nothing() -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""

    call = feed.service.transport.stream(method_path("feed", "Echo"), nothing(), [ROOT], Deadline.after(5))
    try:
        with pytest.raises(CallError) as caught:
            await call.__anext__()
    finally:
        await call.aclose()
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "over mutual TLS" in caught.value.details
