"""A worker's events go through the outbox: with the call's success, never without it.

An in-process users worker on a shared in-memory fabric (a hub, as ``modrpc up`` runs it),
called over a real socket. The user and its ``users.created`` commit in one SQLite transaction
(``gctx.outbox()``), and the worker's relay publishes the event once it is committed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gen.users.v2025_06_01 import users_pb2
from gen.users.v2025_06_01.client import UsersClient
from runtime.fabric import FabricHub, Message
from runtime.fabric._memory import MemoryFabric
from runtime.identity import Peer
from runtime.tls import InternalTls
from runtime.worker import Worker
from tests.conftest import Dial, StartWorker


class AnyTopic:
    """The hub lets every module use every topic: delivery is what is tested here."""

    def check(self, peer: Peer, action: str, topic: str) -> None:
        return None


@pytest.fixture
async def hub(tls_dir: Path) -> AsyncIterator[tuple[FabricHub, list[Message]]]:
    async with MemoryFabric() as memory:
        got: list[Message] = []

        async def keep(message: Message) -> None:
            got.append(message)

        await memory.subscribe("users.created", keep, group="test")
        hub = FabricHub(memory, tls=InternalTls.load(tls_dir, Peer.hub(), dev_ca=True), policy=AnyTopic())
        await hub.start()
        yield hub, got
        await hub.stop()


@pytest.fixture
async def users(start_worker: StartWorker, worker_settings: object, hub: tuple[FabricHub, list[Message]]) -> Worker:
    settings = worker_settings(fabric_url=hub[0].url)  # type: ignore[operator]
    return await start_worker("users", settings=settings)


async def until(condition: object, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - polls state with no event
            await asyncio.sleep(0.01)


async def test_a_created_user_and_its_event_commit_together_and_the_event_is_published(
    users: Worker, hub: tuple[FabricHub, list[Message]], module_data_dir: Path, dial: Dial
) -> None:
    _, got = hub
    email = f"outbox-{uuid.uuid4().hex[:10]}@example.com"
    async with dial(users) as channel:
        client = UsersClient(channel)
        user = await client.create_user(
            users_pb2.CreateUserRequest(given_name="Ada", family_name="Lovelace", email=email), timeout=5
        )
        await until(lambda: any(m.msg_id == f"users.created:{user.id}" for m in got))
        # The same email again: the write fails, and no event goes out for it.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.create_user(
                users_pb2.CreateUserRequest(given_name="Ada", family_name="Again", email=email), timeout=5
            )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    await asyncio.sleep(0.3)
    mine = [m for m in got if email.encode() in m.data]
    assert [m.msg_id for m in mine] == [f"users.created:{user.id}"]
    assert mine[0].request_id, "the event carries the request id of the call that published it"
    with sqlite3.connect(module_data_dir / "users.sqlite3") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "modrpc_outbox" in tables, "the event was committed in the users database itself"
        waiting = db.execute(
            "SELECT COUNT(*) FROM modrpc_outbox WHERE data LIKE ? AND published_at IS NULL", (f"%{email}%",)
        ).fetchone()
        assert waiting == (0,), "published, so nothing waits"


async def test_an_invalid_request_publishes_nothing(
    users: Worker, hub: tuple[FabricHub, list[Message]], dial: Dial
) -> None:
    _, got = hub
    async with dial(users) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await UsersClient(channel).create_user(
                users_pb2.CreateUserRequest(given_name="", email="not-an-email"), timeout=5
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await asyncio.sleep(0.2)
    assert not any(b"not-an-email" in m.data for m in got)


async def test_a_subscriber_commits_its_event_with_its_own_write_once_per_event(
    start_worker: StartWorker, worker_settings: object, hub: tuple[FabricHub, list[Message]], module_data_dir: Path
) -> None:
    """``notifications.welcome`` saves the welcome and its ``notifications.sent`` in one
    transaction of the module's database (so no crash between them can lose the event), and a
    redelivered ``users.created`` for a user already welcomed publishes nothing more."""
    fabric_hub, _ = hub
    memory = fabric_hub.fabric
    sent: list[Message] = []

    async def keep(message: Message) -> None:
        sent.append(message)

    await memory.subscribe("notifications.sent", keep, group="test-sent")
    settings = worker_settings(fabric_url=fabric_hub.url)  # type: ignore[operator]
    await start_worker("notifications", settings=settings)
    user_id = f"u-{uuid.uuid4().hex[:12]}"
    event = f'{{"id": "{user_id}", "email": "{user_id}@example.com", "given_name": "Ada"}}'.encode()
    await memory.publish("users.created", event, msg_id=f"users.created:{user_id}")
    await until(lambda: any(user_id.encode() in m.data for m in sent))
    await memory.publish("users.created", event)  # delivered again, as after a crash before its ack
    await asyncio.sleep(0.5)
    mine = [m for m in sent if user_id.encode() in m.data]
    assert len(mine) == 1, [m.msg_id for m in mine]
    with sqlite3.connect(module_data_dir / "notifications.sqlite3") as db:
        (row,) = db.execute("SELECT body FROM sent WHERE user_id = ?", (user_id,)).fetchall()
        notification_id = json.loads(row[0])["id"]
        events = db.execute("SELECT msg_id FROM modrpc_outbox WHERE topic = 'notifications.sent'").fetchall()
    assert (f"notifications.sent:{notification_id}",) in events, "the event was committed with the welcome"
    assert mine[0].msg_id == f"notifications.sent:{notification_id}"
