"""The outbox: messages committed locally, relayed to the fabric when it takes them, never lost.

The fabric here is the real in-memory one, behind a switch that makes it refuse publishes the
way a fabric that is down does (``Unavailable``), or refuse one message for good.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from runtime.errors import InvalidArgument, ResourceExhausted, Unavailable
from runtime.fabric import Message, OutboxRelay, OutgoingMessage
from runtime.fabric._memory import MemoryFabric


class Switchable:
    """A fabric that can be down: publishes then fail as they do when NATS is unreachable."""

    def __init__(self, fabric: MemoryFabric) -> None:
        self.fabric = fabric
        self.down = False
        self.refuse: set[str] = set()
        """Message ids refused for good."""

    @property
    def options(self) -> object:
        return self.fabric.options

    async def publish(self, topic: str, data: bytes, *, headers: Mapping[str, str] | None = None,
                      msg_id: str | None = None, **rest: object) -> None:  # fmt: skip
        if self.down:
            raise Unavailable("cannot publish: not connected to NATS at nats://fabric (played by the test)")
        if msg_id in self.refuse:
            raise InvalidArgument(f"header of {msg_id} is not allowed (played by the test)")
        await self.fabric.publish(topic, data, headers=headers, msg_id=msg_id, **rest)  # type: ignore[arg-type]


@pytest.fixture
async def fabric() -> AsyncIterator[Switchable]:
    async with MemoryFabric() as memory:
        yield Switchable(memory)


async def received(fabric: Switchable, topic: str = "users.created") -> list[Message]:
    got: list[Message] = []

    async def keep(message: Message) -> None:
        got.append(message)

    await fabric.fabric.subscribe(topic, keep, group="test")
    return got


async def until(condition: object, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - polls state with no event
            await asyncio.sleep(0.01)


def message(n: int, **extra: object) -> OutgoingMessage:
    return OutgoingMessage.build("users.created", b'{"n": %d}' % n, msg_id=f"users.created:{n}", **extra)  # type: ignore[arg-type]


async def test_messages_are_published_in_order_with_their_ids(fabric: Switchable, tmp_path: Path) -> None:
    got = await received(fabric)
    relay = OutboxRelay(fabric, tmp_path / "outbox.sqlite3")  # type: ignore[arg-type]
    await relay.start()
    await relay.put([message(1), message(2)])
    await until(lambda: len(got) == 2)
    await relay.stop()
    assert [m.msg_id for m in got] == ["users.created:1", "users.created:2"]
    assert relay.pending == 0


async def test_a_message_without_an_id_gets_one_for_deduplication() -> None:
    built = OutgoingMessage.build("users.created", b"{}")
    assert built.msg_id and len(built.msg_id) == 32


async def test_a_bad_message_is_refused_when_it_is_published_not_when_it_is_relayed() -> None:
    with pytest.raises(InvalidArgument, match="topic"):
        OutgoingMessage.build("users created", b"{}")
    with pytest.raises(InvalidArgument, match="reserved"):
        OutgoingMessage.build("users.created", b"{}", headers={"modrpc-dlq-error": "x"})


async def test_while_the_fabric_is_down_messages_wait_and_go_out_when_it_returns(
    fabric: Switchable, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "modrpc.fabric.outbox")
    got = await received(fabric)
    relay = OutboxRelay(fabric, tmp_path / "outbox.sqlite3")  # type: ignore[arg-type]
    await relay.start()
    fabric.down = True
    await relay.put([message(n) for n in range(5)])
    await asyncio.sleep(0.3)
    assert got == [] and relay.pending == 5
    fabric.down = False
    await until(lambda: len(got) == 5)
    await relay.stop()
    assert [m.msg_id for m in got] == [f"users.created:{n}" for n in range(5)]
    said = [r.getMessage() for r in caplog.records]
    assert any("cannot take events" in s and "5 in" in s and "not connected to NATS" in s for s in said), said
    assert any("takes events again" in s and "5 outbox messages published" in s for s in said), said


async def test_what_a_stopped_relay_left_is_published_by_the_next_one(fabric: Switchable, tmp_path: Path) -> None:
    """A worker that stops (or dies) while the fabric is down leaves its messages on disk; the
    next worker of the module publishes them."""
    got = await received(fabric)
    path = tmp_path / "outbox.sqlite3"
    first = OutboxRelay(fabric, path)  # type: ignore[arg-type]
    await first.start()
    fabric.down = True
    await first.put([message(1)])
    await first.stop(grace=0.2)
    fabric.down = False
    second = OutboxRelay(fabric, path)  # type: ignore[arg-type]
    await second.start()
    await until(lambda: len(got) == 1)
    await second.stop()
    assert got[0].msg_id == "users.created:1"


def _module_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY)")
    return db


async def test_a_batch_written_in_the_modules_transaction_commits_and_rolls_back_with_it(
    fabric: Switchable, tmp_path: Path
) -> None:
    got = await received(fabric)
    relay = OutboxRelay(fabric, tmp_path / "outbox.sqlite3")  # type: ignore[arg-type]
    await relay.start()
    db = _module_db(tmp_path / "users.sqlite3")

    def insert(user_id: str, n: int, *, commit: bool) -> None:
        batch = relay.batch()
        batch.add(message(n))
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO users VALUES (?)", (user_id,))
        batch.write(db)
        db.execute("COMMIT" if commit else "ROLLBACK")
        assert batch.unwritten() == []  # nothing left for the local outbox

    await asyncio.to_thread(insert, "u1", 1, commit=True)
    await asyncio.to_thread(insert, "u2", 2, commit=False)  # the write failed: no event either
    relay.wake()
    await until(lambda: len(got) == 1)
    await asyncio.sleep(0.2)
    await relay.stop()
    assert [m.msg_id for m in got] == ["users.created:1"]
    waiting = db.execute("SELECT COUNT(*) FROM modrpc_outbox WHERE published_at IS NULL").fetchone()
    assert waiting == (0,), "nothing waits once the fabric took it"
    assert [r[0] for r in db.execute("SELECT id FROM users")] == ["u1"]


async def test_a_module_database_with_waiting_rows_is_drained_by_the_next_relay(
    fabric: Switchable, tmp_path: Path
) -> None:
    got = await received(fabric)
    path = tmp_path / "outbox.sqlite3"
    first = OutboxRelay(fabric, path)  # type: ignore[arg-type]
    await first.start()
    fabric.down = True
    db = _module_db(tmp_path / "users.sqlite3")
    batch = first.batch()
    batch.add(message(7))
    db.execute("BEGIN IMMEDIATE")
    batch.write(db)
    db.execute("COMMIT")
    await first.stop(grace=0.2)
    fabric.down = False
    second = OutboxRelay(fabric, path)  # type: ignore[arg-type]
    await second.start()  # it finds users.sqlite3 among the outboxes recorded in its own
    await until(lambda: len(got) == 1)
    await second.stop()
    assert got[0].msg_id == "users.created:7"


async def test_a_message_refused_for_good_is_kept_marked_and_logged_not_dropped(
    fabric: Switchable, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    got = await received(fabric)
    fabric.refuse.add("users.created:2")
    path = tmp_path / "outbox.sqlite3"
    relay = OutboxRelay(fabric, path)  # type: ignore[arg-type]
    await relay.start()
    await relay.put([message(1), message(2), message(3)])
    await until(lambda: len(got) == 2)
    await relay.stop()
    assert [m.msg_id for m in got] == ["users.created:1", "users.created:3"]
    with sqlite3.connect(path) as db:
        (kept,) = db.execute("SELECT msg_id, error FROM modrpc_outbox WHERE error IS NOT NULL").fetchall()
    assert kept[0] == "users.created:2" and "not allowed" in kept[1]
    said = [r.getMessage() for r in caplog.records]
    assert any("refused outbox message users.created:2 to users.created for good" in s for s in said), said
    assert not any("wait in the outbox" in s for s in said), "a refused message is not waiting for anyone"


async def test_what_the_fabric_took_just_before_an_outage_is_published_again_when_it_returns(
    fabric: Switchable, tmp_path: Path
) -> None:
    """A server that goes down right after acknowledging may not have kept the message (NATS 2.9
    did that under load): those are published again, and their ids let the fabric drop them if
    it did keep them. At least once, never lost."""
    got = await received(fabric)
    relay = OutboxRelay(fabric, tmp_path / "outbox.sqlite3")  # type: ignore[arg-type]
    await relay.start()
    await relay.put([message(1)])
    await until(lambda: len(got) == 1)
    fabric.down = True
    await relay.put([message(2)])
    await asyncio.sleep(0.3)
    fabric.down = False
    await until(lambda: len(got) >= 2)
    await asyncio.sleep(0.3)
    await relay.stop()
    ids = [m.msg_id for m in got]
    assert set(ids) == {"users.created:1", "users.created:2"}
    # The memory fabric kept the first one and drops the repeat by its id; one that had lost it
    # would now have it.
    assert ids.count("users.created:2") == 1


async def test_a_full_outbox_refuses_with_resource_exhausted(fabric: Switchable, tmp_path: Path) -> None:
    relay = OutboxRelay(fabric, tmp_path / "outbox.sqlite3", max_pending=2)  # type: ignore[arg-type]
    await relay.start()
    fabric.down = True
    await relay.put([message(1), message(2)])
    with pytest.raises(ResourceExhausted, match="the outbox holds 2 messages"):
        await relay.put([message(3)])
    await relay.stop(grace=0)


async def test_an_expired_message_is_not_published(fabric: Switchable, tmp_path: Path) -> None:
    got = await received(fabric)
    relay = OutboxRelay(fabric, tmp_path / "outbox.sqlite3")  # type: ignore[arg-type]
    await relay.start()
    fabric.down = True
    await relay.put([message(1, ttl=0.1), message(2)])
    await asyncio.sleep(0.3)
    fabric.down = False
    await until(lambda: len(got) == 1)
    await relay.stop()
    assert [m.msg_id for m in got] == ["users.created:2"]
