"""What is particular to the NATS JetStream fabric: its stream layout, outages, real crashes."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import pytest
from nats.js.api import DiscardPolicy, RetentionPolicy

from runtime.errors import Unavailable
from runtime.fabric import Message, open_fabric
from runtime.fabric._nats import NatsFabric
from runtime.fabric._types import NatsOptions
from tests.fixtures.listening import wait_listening
from tests.services import free_port, require_nats

pytestmark = pytest.mark.timeout(60)


async def until(predicate: Callable[[], bool], within: float = 5.0, every: float = 0.005) -> None:
    """Wait until ``predicate()`` holds; the handlers that make it true run on this loop."""
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(every)


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A fresh prefix; every stream made under it is deleted after the test."""
    url = require_nats()
    value = f"t{uuid.uuid4().hex[:10]}"
    yield value
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(value + "_"):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


async def test_an_unreachable_server_is_unavailable_at_start_and_the_password_is_masked() -> None:
    fabric = open_fabric("nats://alice:hunter2@127.0.0.1:1", connect_timeout=0.5)
    with pytest.raises(Unavailable) as caught:
        await fabric.start()
    assert "nats://alice:***@127.0.0.1:1" in caught.value.message
    assert "hunter2" not in caught.value.message
    await fabric.close()


async def test_each_topic_gets_its_own_stream_under_the_prefix(prefix: str) -> None:
    url = require_nats()
    async with open_fabric(url, prefix=prefix, capacity=50, dedup_window=30) as fabric:
        await fabric.publish("orders.created", b"x")
        await fabric.publish("dlq.orders.created", b"y")

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        streams = {i.config.name: i.config for i in await js.streams_info()}
    finally:
        await nc.close()
    ours = {name: cfg for name, cfg in streams.items() if name and name.startswith(prefix + "_")}
    assert len(ours) == 2
    topic = next(
        cfg for name, cfg in ours.items() if "_orders_created_" in name and "dlq" not in name
    )
    assert topic.subjects == [f"{prefix}.orders.created"]
    assert topic.retention == RetentionPolicy.INTEREST
    assert topic.discard == DiscardPolicy.NEW
    assert topic.max_msgs == 50
    assert topic.duplicate_window == 30
    dead = next(cfg for name, cfg in ours.items() if "dlq" in name)
    assert dead.retention == RetentionPolicy.LIMITS
    assert dead.discard == DiscardPolicy.OLD


async def test_fabrics_with_different_prefixes_do_not_see_each_others_topics(prefix: str) -> None:
    url = require_nats()
    seen: list[bytes] = []

    async def record(msg: Message) -> None:
        seen.append(msg.data)

    async with (
        open_fabric(url, prefix=prefix) as ours,
        open_fabric(url, prefix=prefix + "x") as theirs,
    ):
        await ours.subscribe("shared.name", record)
        await theirs.subscribe("shared.name", record)
        await ours.publish("shared.name", b"ours")
        await until(lambda: bool(seen))
        await asyncio.sleep(0.3)
    assert seen == [b"ours"]
    # the second prefix made a stream too; remove it here, the fixture only knows the first
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefix + "x_"):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


async def test_priority_is_not_supported_and_delivery_follows_publish_order(prefix: str) -> None:
    seen: list[bytes] = []

    async def record(msg: Message) -> None:
        seen.append(msg.data)

    async with NatsFabric(require_nats(), NatsOptions(prefix=prefix)) as fabric:
        await fabric.subscribe("tickets", record, group="desk")
        for data, priority in [(b"low", 0), (b"high", 9), (b"mid", 5)]:
            await fabric.publish("tickets", data, priority=priority)
        await until(lambda: len(seen) >= 3)
    assert seen == [b"low", b"high", b"mid"]


async def test_closing_one_members_connection_hands_its_messages_to_another_host(
    prefix: str,
) -> None:
    url = require_nats()
    entered = asyncio.Event()

    async def stuck(msg: Message) -> None:
        entered.set()
        await asyncio.Event().wait()

    received: list[Message] = []

    async def record(msg: Message) -> None:
        received.append(msg)

    async with open_fabric(url, prefix=prefix) as survivor_host:
        dying_host = open_fabric(url, prefix=prefix, drain_timeout=0.1)
        await dying_host.start()
        await dying_host.subscribe("renders", stuck, group="renderers")
        await survivor_host.publish("renders", b"0")
        async with asyncio.timeout(5):
            await entered.wait()
        await survivor_host.subscribe("renders", record, group="renderers")
        for i in range(1, 10):
            await survivor_host.publish("renders", b"%d" % i)
        await dying_host.close()  # its connection goes away with a message in its handler

        await until(lambda: len({m.data for m in received}) == 10, within=10)
    assert {m.data for m in received} == {b"%d" % i for i in range(10)}


async def test_a_killed_subscriber_process_loses_no_message(prefix: str) -> None:
    """A real crash: the process holding a message is SIGKILLed, so nothing is nak'd or closed.

    JetStream redelivers the unacknowledged message after ack_wait to the surviving member.
    """
    url = require_nats()
    child = textwrap.dedent(
        f"""
        import asyncio
        from runtime.fabric import open_fabric

        async def main():
            async with open_fabric({url!r}, prefix={prefix!r}) as fabric:
                async def stuck(msg):
                    print("holding", msg.data.decode(), flush=True)
                    await asyncio.Event().wait()
                await fabric.subscribe("crashy", stuck, group="workers", ack_wait=1.0)
                print("ready", flush=True)
                await asyncio.Event().wait()

        asyncio.run(main())
        """
    )
    received: list[Message] = []

    async def record(msg: Message) -> None:
        received.append(msg)

    async with open_fabric(url, prefix=prefix) as fabric:
        await fabric.publish("crashy", b"before anyone listens")  # creates the stream
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", child, cwd=ROOT, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(15):
                assert (await proc.stdout.readline()).strip() == b"ready"
                await fabric.publish("crashy", b"0")
                assert (await proc.stdout.readline()).strip() == b"holding 0"
            await fabric.subscribe("crashy", record, group="workers", ack_wait=1.0)
            for i in range(1, 10):
                await fabric.publish("crashy", b"%d" % i)
            proc.kill()
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

        await until(lambda: len({m.data for m in received}) == 10, within=15)
    assert {m.data for m in received} == {b"%d" % i for i in range(10)}


async def _start_server(port: int, store: Path) -> asyncio.subprocess.Process:
    binary = shutil.which("nats-server") or shutil.which("/usr/sbin/nats-server")
    if binary is None:
        pytest.skip("nats-server binary not installed; needed to restart a private server")
    proc = await asyncio.create_subprocess_exec(
        binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await wait_listening(port)
    return proc


async def _stop_server(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        await proc.wait()


async def test_the_fabric_reconnects_by_itself_and_logs_the_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A private nats-server is stopped and started again under a live fabric."""
    caplog.set_level(logging.INFO, logger="modrpc.fabric")
    port = free_port()
    server = await _start_server(port, tmp_path)
    received: list[bytes] = []

    async def record(msg: Message) -> None:
        received.append(msg.data)

    try:
        async with open_fabric(f"nats://127.0.0.1:{port}", prefix="reconnect") as fabric:
            await fabric.subscribe("pings", record, group="pong", ack_wait=1.0)
            await fabric.publish("pings", b"before")
            await until(lambda: received == [b"before"])

            await _stop_server(server)
            await until(
                lambda: any("lost the connection" in r.getMessage() for r in caplog.records)
            )
            with pytest.raises(Unavailable, match="not connected"):
                await fabric.publish("pings", b"during")  # refused at once, never sent later
            server = await _start_server(port, tmp_path)

            async with asyncio.timeout(20):
                while True:
                    try:
                        await fabric.publish("pings", b"after")
                        break
                    except Unavailable:
                        await asyncio.sleep(0.1)
            await until(lambda: b"after" in received, within=20)
    finally:
        await _stop_server(server)
    messages = [r.getMessage() for r in caplog.records if r.name == "modrpc.fabric"]
    assert any("lost the connection to NATS" in m for m in messages)
    assert any("reconnected to NATS" in m for m in messages)
    assert received == [b"before", b"after"]
