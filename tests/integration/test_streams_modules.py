"""Streams between modules and in the embedded mode, on real sockets in this process.

``relay`` calls each of ``feed``'s streaming shapes through ``gctx.modules.feed``: the calls
carry relay's identity and the caller's deadline as a unary module call does. The embedded
gateway serves ``feed`` in its own process (no socket to the worker) with the same streams.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc.aio

from runtime.config import Settings
from runtime.gateway import Gateway
from runtime.store import WorkerRecord, open_store
from runtime.transport import InProcessModules
from runtime.worker import Worker
from tests.conftest import Dial
from tests.fixtures.gateway_modules.feeds import FeedClient
from tests.fixtures.gateway_modules.stack import GatewayClient, GatewayStack

LEFT = 8.05
"""The most a call made with an 8 s timeout may have left: grpc sends its timeout rounded up
(by up to ~10 ms), so a gateway reading ``time_remaining()`` at once can see a little more than
8 s; anything from feed's or relay's own method timeouts (20 s and more) is far above it."""


async def test_a_module_streams_to_another_through_gctx_with_its_identity_and_the_deadline(
    gw_stack: GatewayStack, gw_modules: dict[str, Path], dial: Dial
) -> None:
    """relay reaches feed over the network (mutual TLS as ``module:relay``): feed sees the
    original caller via relay, checks that caller's roles on ``Total`` (``inner_roles`` is
    ``caller`` by default) and gets the caller's deadline, shortened by the time spent."""
    tree = gw_modules["streams"]
    feed_worker = await gw_stack.worker("feed", tree=tree)
    await gw_stack.worker("relay", tree=tree)
    gateway = await gw_stack.gateway(ready=["feed", "relay"])
    client = gw_stack.client(gateway)
    request = {"heading": "relayed", "upto": 4}

    refused = await client.call("relay", "Relay", request, token=gw_stack.token(), timeout=8.0)
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.details.startswith("missing role 'feed:write' (relay called feed on behalf of 'ada'")

    reply = await client.call("relay", "Relay", request, token=gw_stack.token("feed:write"), timeout=8.0)
    assert reply.ok, reply.details
    assert reply.body == {"counted": [1, 2, 3, 4], "total": 10, "echoed": [2, 3, 4, 5]}
    assert feed_worker.service is not None
    async with dial(feed_worker) as channel:
        tally = await FeedClient(channel, feed_worker.service.catalog).ran("relayed")
    assert tally["caller"] == "jwt:ada via relay"  # the caller, carried by relay, whose certificate names it
    assert 0 < tally["deadline"] < LEFT  # the caller's deadline, shortened by the time spent
    assert (tally["before"], tally["after"], tally["cleaned"]) == (4, 4, 4)  # count twice, total, echo


async def test_an_embedded_gateway_streams_from_a_module_in_its_own_process(
    gw_settings: Callable[..., Settings], gw_modules: dict[str, Path]
) -> None:
    tree = gw_modules["streams"]
    settings = gw_settings(modules_dir=tree)
    local = InProcessModules()
    worker = Worker("feed", settings, host="127.0.0.1", port=0, modules_dir=tree, local=local)
    await worker.start()
    gateway = Gateway(settings, host="127.0.0.1", port=0, local=local)
    try:
        assert worker.service is not None
        now = time.time()
        async with open_store(settings.store_url) as store:  # only the in-process path can answer
            await store.register_worker(
                WorkerRecord(
                    id=worker.worker_id, module="feed", address="127.0.0.1:1", versions=(worker.service.served,),
                    healthy=True, pid=os.getpid(), started_at=now, last_seen=now,
                )
            )  # fmt: skip
        await gateway.start()
        await gateway.wait_ready(["feed"], timeout=10.0)
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            feed = FeedClient(channel, worker.service.catalog)
            messages, trailers = await feed.collect("Count", [{"heading": "embedded", "upto": 50}])
            assert [m["n"] for m in messages] == list(range(1, 51)) and trailers["x-request-id"]
            old, _ = await feed.collect("Count", [{"title": "embedded-old", "upto": 2}], version="2025-01-15")
            assert [m["title"] for m in old] == ["embedded-old", "embedded-old"]
            call = feed.open("Echo")
            await call.write(feed.encode("Echo", {"heading": "embedded", "n": 1}))
            assert feed.decode("Echo", await call.read())["n"] == 2
            await call.done_writing()
            assert await call.read() == grpc.aio.EOF
            name = "embedded-cancelled"
            call = feed.open("Count", [{"heading": name, "upto": 100_000, "pause": 0.01}])
            await call.read()
            call.cancel()
            for _ in range(100):
                tally = await feed.ran(name)
                if tally["cleaned"]:
                    break
                await asyncio.sleep(0.05)
            assert (tally["closed"], tally["cleaned"]) == (1, 1)
    finally:
        await gateway.stop(0.5)
        await worker.stop(0.5)


async def test_in_the_embedded_mode_a_module_streams_to_another_in_process_with_its_identity(
    gw_settings: Callable[..., Settings], gw_modules: dict[str, Path], gw_stack: GatewayStack
) -> None:
    """relay and feed in the gateway's process: relay's streams to feed go through the
    in-process registry, with no certificate to show, and still reach feed as ``module:relay``
    carrying the caller, whose roles feed checks on ``Total``."""
    tree = gw_modules["streams"]
    settings = gw_settings(modules_dir=tree)
    local = InProcessModules()
    workers = [Worker(m, settings, host="127.0.0.1", port=0, modules_dir=tree, local=local) for m in ("feed", "relay")]
    for worker in workers:
        await worker.start()
    feed = workers[0].service
    assert feed is not None
    opened: list[str] = []

    class Watched:
        """feed's in-process transport, noting each stream opened through it."""

        async def unary(self, *args: Any) -> Any:
            return await feed.transport.unary(*args)

        def stream(self, method: str, *args: Any) -> Any:
            opened.append(method.rpartition("/")[2])
            return feed.transport.stream(method, *args)

    local.register("feed", Watched(), versions=(feed.served,))
    gateway = Gateway(settings, host="127.0.0.1", port=0, local=local)
    try:
        await gateway.start()
        await gateway.wait_ready(["feed", "relay"], timeout=10.0)
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            client = GatewayClient(channel, gateway)
            request = {"heading": "relayed-in-process", "upto": 3}
            refused = await client.call("relay", "Relay", request, token=gw_stack.token())
            assert refused.code == grpc.StatusCode.PERMISSION_DENIED
            assert "relay called feed on behalf of 'ada'" in refused.details
            reply = await client.call("relay", "Relay", request, token=gw_stack.token("feed:write"), timeout=8.0)
            assert reply.ok, reply.details
            assert reply.body == {"counted": [1, 2, 3], "total": 6, "echoed": [2, 3, 4]}
            assert opened == ["Count", "Total", "Count", "Total", "Echo"]  # all in process
            tally = await FeedClient(channel, feed.catalog).ran("relayed-in-process")
        assert tally["caller"] == "jwt:ada via relay"
        assert 0 < tally["deadline"] < LEFT
    finally:
        await gateway.stop(0.5)
        for worker in reversed(workers):
            await worker.stop(0.5)
