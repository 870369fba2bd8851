"""The fault scenarios, each played under bounded load, and the table they make.

Every scenario runs against one :class:`~tests.faults.cluster.Cluster` (the example modules
under ``modrpc up`` on private PostgreSQL, NATS and Redis), one after another, and gives one
:class:`Row`: how many calls were made, how many failed (and with what), how many
``users.created`` events were published (users created) and how many reached a subscriber.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from gen.users.v2025_06_01 import users_pb2
from gen.users.v2025_06_01.client import UsersClient
from tests.faults.cluster import DRAIN_SECONDS, Cluster
from tests.faults.events import EventAudit
from tests.faults.load import (
    Outcomes,
    create_users,
    get_users,
    metadata,
    place_orders,
    retrying_channel,
    saved,
)

__all__ = ["FULL", "SHORT", "Row", "Suite", "table"]

DELIVERY_WAIT = 30.0
"""How long, after a scenario, its events may take to arrive before they count as lost."""


@dataclass
class Row:
    scenario: str
    calls: int = 0
    failed: int = 0
    published: int = 0
    delivered: int = 0
    notes: list[str] = field(default_factory=list)
    failed_idempotent: int = 0
    saved_and_failed: int = 0
    unavoidable: int = 0
    """Failures of calls that are not idempotent which the fault made unavoidable, each with the
    status the scenario expects (counted by the scenario)."""
    snapshots_lost: int = 0
    """Succeeded calls with a snapshot policy whose snapshot never reached the store."""

    @property
    def lost(self) -> int:
        return self.published - self.delivered

    @property
    def ok(self) -> bool:
        """No idempotent call failed, no event was lost, no call both saved and failed, and any
        other failure was one the fault made unavoidable (see each scenario)."""
        expected = self.failed == self.failed_idempotent + self.unavoidable
        return (
            self.failed_idempotent == 0 and self.lost == 0 and self.saved_and_failed == 0
            and self.snapshots_lost == 0 and expected
        )  # fmt: skip


HEADER = ("scenario", "calls", "failed", "idempotent failed", "events published", "events delivered", "lost")


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table, notes below it."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|"]
    for row in rows:
        cells = (row.scenario, row.calls, row.failed, row.failed_idempotent, row.published, row.delivered, row.lost)
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    for row in rows:
        for note in row.notes:
            lines.append(f"- {row.scenario}: {note}")
    return "\n".join(lines)


Fault = Callable[[], Awaitable[None]]


class Suite:
    """The cluster, the event audit, and what the scenarios share."""

    def __init__(self, cluster: Cluster, audit: EventAudit) -> None:
        self.cluster = cluster
        self.audit = audit
        self.user_ids: list[str] = []

    async def seed(self) -> None:
        """A few users for GetUser to read, and enough stock for every PlaceOrder to come."""
        self.cluster.data.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.cluster.data / "inventory.sqlite3", timeout=10) as db:
            db.execute("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, available INTEGER NOT NULL)")
            db.execute("INSERT OR REPLACE INTO stock VALUES ('WIDGET-1', 1000000)")
        async with grpc.aio.insecure_channel(self.cluster.address) as channel:
            users = UsersClient(channel, metadata=metadata(self.cluster.token))
            for n in range(20):
                email = f"seed-{n}-{os.getpid()}-{time.monotonic_ns()}@example.com"
                request = users_pb2.CreateUserRequest(given_name="Seed", family_name=str(n), email=email)
                user = await users.create_user(request, timeout=10)
                self.user_ids.append(user.id)
        missing = await self.audit.wait_for(self.user_ids, DELIVERY_WAIT)
        if missing:
            raise RuntimeError(f"seed events never arrived: {missing}")

    async def under_load(
        self,
        row: Row,
        length: float,
        fault: Fault,
        *,
        gets: int = 8,
        get_rate: float = 200.0,
        create_rate: float = 8.0,
        order_rate: float = 0.0,
        addresses: list[str] | None = None,
    ) -> list[Outcomes]:
        """Run the load for ``length`` seconds with ``fault`` played inside it; fill ``row``."""
        stop = asyncio.Event()
        channel = retrying_channel(addresses) if addresses else grpc.aio.insecure_channel(self.cluster.address)
        token = self.cluster.token
        async with channel:
            loads = [
                get_users(channel, token, self.user_ids, stop, loops=gets, rate=get_rate),
                create_users(channel, token, stop, rate=create_rate),
            ]
            if order_rate:
                loads.append(place_orders(channel, token, self.user_ids[0], stop, rate=order_rate))
            running = asyncio.gather(*loads)

            async def play() -> None:
                started = time.monotonic()
                await fault()
                await asyncio.sleep(max(0.0, length - (time.monotonic() - started)))
                stop.set()

            _, outcomes = await asyncio.gather(play(), running)
        await self.account(row, list(outcomes))
        return list(outcomes)

    async def account(self, row: Row, outcomes: list[Outcomes]) -> None:
        for outcome in outcomes:
            row.calls += outcome.calls
            row.failed += outcome.failed
            if outcome.idempotent:
                row.failed_idempotent += outcome.failed
            if outcome.failed:
                row.notes.append(outcome.describe())
            if outcome.created or outcome.failed_emails:
                row.published += len(outcome.created)
                missing = await self.audit.wait_for(outcome.created, DELIVERY_WAIT)
                row.delivered += len(outcome.created) - len(missing)
                both = saved(self.cluster.data, outcome.failed_emails)
                row.saved_and_failed += len(both)
                if both:
                    row.notes.append(f"{len(both)} CreateUser calls failed although the user was saved")

    async def settle(self) -> None:
        """Between scenarios: every module back to its warm pool."""
        for module in ("users", "orders", "inventory", "notifications"):
            await self.cluster.wait_workers(module, 2, within=60)


# -- the scenarios --------------------------------------------------------------------------------


async def _later(seconds: float, action: Callable[[], object]) -> None:
    await asyncio.sleep(seconds)
    result = action()
    if asyncio.iscoroutine(result):
        await result


async def worker_killed(suite: Suite, length: float) -> Row:
    """SIGKILL one of the two users workers under load."""
    row = Row("users worker SIGKILL")
    victim = (await suite.cluster.wait_workers("users", 2))[0]
    outcomes = await suite.under_load(row, length, lambda: _later(length * 0.25, lambda: os.kill(victim.pid, signal.SIGKILL)))
    # A CreateUser running in the killed worker when it died is cut off: it may have run, and it
    # is not idempotent, so it is not retried (its caller gets UNAVAILABLE). Rare: calls take
    # milliseconds, a few a second are sent.
    cut = sum(o.codes["UNAVAILABLE"] for o in outcomes if not o.idempotent)
    row.unavoidable += cut
    if cut:
        row.notes.append(f"{cut} CreateUser calls (not idempotent) were running in the killed worker")
    return row


async def worker_hung(suite: Suite, length: float) -> Row:
    """SIGSTOP one of the two users workers under load and leave it stopped."""
    row = Row("users worker SIGSTOP (hung)")
    victim = (await suite.cluster.wait_workers("users", 2))[0]
    stopped_at = 0.0

    def freeze() -> None:
        nonlocal stopped_at
        stopped_at = time.monotonic()
        os.kill(victim.pid, signal.SIGSTOP)

    try:
        outcomes = await suite.under_load(row, length, lambda: _later(length * 0.2, freeze))
        # A call that is not idempotent, sent to the instance before it was found hung, may or
        # may not have run: it cannot be retried, and its caller gets DEADLINE_EXCEEDED.
        caught = sum(o.codes["DEADLINE_EXCEEDED"] for o in outcomes if not o.idempotent)
        row.unavoidable += caught
        if caught:
            row.notes.append(
                f"{caught} CreateUser (not idempotent) sent to the instance before it was found hung: "
                "DEADLINE_EXCEEDED, as it may have run"
            )
    finally:
        try:
            os.kill(victim.pid, signal.SIGCONT)
            row.notes.append("the hung worker was still running at the end (not restarted)")
        except ProcessLookupError:
            row.notes.append("the supervisor killed and restarted the hung worker")
    return row


async def worker_drained(suite: Suite, length: float) -> Row:
    """SIGTERM one of the two users workers under load: it drains and the supervisor restarts it."""
    row = Row("users worker SIGTERM (drain)")
    victim = (await suite.cluster.wait_workers("users", 2))[0]
    await suite.under_load(row, length, lambda: _later(length * 0.25, lambda: os.kill(victim.pid, signal.SIGTERM)))
    return row


async def nats_down(suite: Suite, length: float) -> Row:
    """NATS stopped for half the scenario, then started again on its data."""
    row = Row("NATS down")
    nats = suite.cluster.nats

    async def fault() -> None:
        await asyncio.sleep(length * 0.2)
        await asyncio.to_thread(nats.stop)
        await asyncio.sleep(length * 0.5)
        await asyncio.to_thread(nats.start)

    await suite.under_load(row, length, fault)
    return row


async def postgres_down(suite: Suite, length: float) -> Row:
    """The store (PostgreSQL) stopped for longer than a worker's staleness limit, then back."""
    row = Row("PostgreSQL down 12s")
    postgres = suite.cluster.postgres

    async def fault() -> None:
        await asyncio.sleep(2.0)
        await asyncio.to_thread(postgres.stop)
        await asyncio.sleep(12.0)
        await asyncio.to_thread(postgres.start)

    await suite.under_load(row, max(length, 20.0), fault, order_rate=2.0)
    return row


async def orders_killed_store_down(suite: Suite, length: float) -> Row:
    """The store down, and meanwhile one orders worker SIGKILLed while it holds snapshots it
    could not write: every PlaceOrder that succeeded must still get its snapshot stored (the
    restarted worker takes over the dead one's spool)."""
    row = Row("orders worker SIGKILL, PostgreSQL down")
    postgres = suite.cluster.postgres
    victim = (await suite.cluster.wait_workers("orders", 2))[0]

    async def fault() -> None:
        await asyncio.sleep(2.0)
        await asyncio.to_thread(postgres.stop)
        await asyncio.sleep(4.0)
        os.kill(victim.pid, signal.SIGKILL)
        await asyncio.sleep(4.0)
        await asyncio.to_thread(postgres.start)

    outcomes = await suite.under_load(row, max(length, 16.0), fault, gets=2, create_rate=2.0, order_rate=4.0)
    succeeded = [rid for o in outcomes for rid in o.succeeded]
    missing = await _snapshots_missing(suite.cluster.store_url, succeeded, within=DELIVERY_WAIT)
    row.snapshots_lost = len(missing)
    row.notes.append(f"{len(succeeded) - len(missing)} of {len(succeeded)} succeeded PlaceOrder calls have their snapshot stored")
    # A PlaceOrder running in the killed worker is cut off: not idempotent, so not retried.
    cut = sum(o.codes["UNAVAILABLE"] + o.codes["INTERNAL"] for o in outcomes if not o.idempotent)
    row.unavoidable += cut
    if cut:
        row.notes.append(f"{cut} PlaceOrder calls (not idempotent) were running in the killed worker")
    return row


async def _snapshots_missing(store_url: str, request_ids: list[str], *, within: float) -> list[str]:
    """Which of ``request_ids`` have no snapshot of ``orders.PlaceOrder`` in the store yet,
    waiting up to ``within`` seconds for them."""
    from runtime.lcc import LogSnapshotStore
    from runtime.store import open_store

    wanted = set(request_ids)
    found: set[str] = set()
    seen: set[str] = set()
    give_up = time.monotonic() + within
    async with open_store(store_url) as store:
        snapshots = LogSnapshotStore(store)
        while True:
            for snapshot_id in await snapshots.list("orders.PlaceOrder"):
                if snapshot_id not in seen:
                    seen.add(snapshot_id)
                    found.add((await snapshots.load(snapshot_id)).request_id)
            missing = sorted(wanted - found)
            if not missing or time.monotonic() > give_up:
                return missing
            await asyncio.sleep(0.5)


async def postgres_hung(suite: Suite, length: float) -> Row:
    """The store frozen (SIGSTOP: connections open, no answers), then thawed."""
    row = Row("PostgreSQL hung")
    postgres = suite.cluster.postgres

    async def fault() -> None:
        await asyncio.sleep(length * 0.2)
        postgres.freeze()
        await asyncio.sleep(length * 0.5)
        postgres.thaw()

    await suite.under_load(row, length, fault, order_rate=4.0)
    return row


async def redis_down(suite: Suite, length: float) -> Row:
    """Redis (rate limits) stopped, then back: the gateway fails open, as configured."""
    row = Row("Redis down")
    redis = suite.cluster.redis

    async def fault() -> None:
        await asyncio.sleep(length * 0.2)
        await asyncio.to_thread(redis.stop)
        await asyncio.sleep(length * 0.5)
        await asyncio.to_thread(redis.start)

    await suite.under_load(row, length, fault)
    return row


async def gateway_drained(suite: Suite, length: float) -> Row:
    """Two gateways, clients over both; one gets SIGTERM: it drains, clients go to the other."""
    row = Row("gateway SIGTERM (drain)")
    process, address = await suite.cluster.start_gateway()
    took = 0.0

    async def stop() -> None:
        nonlocal took
        took = await process.stop(signal.SIGTERM)

    await suite.under_load(row, length, lambda: _later(length * 0.3, stop), addresses=[suite.cluster.address, address])
    row.notes.append(f"the gateway exited {took:.1f}s after SIGTERM")
    return row


async def ctrl_c(suite: Suite, length: float) -> Row:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) of ``modrpc up`` under load.

    Calls running then finish; new ones are refused with UNAVAILABLE (the gateway stops
    accepting, then its port closes: nothing can be called any more, which is the point).
    None may end CANCELLED, and ``modrpc up`` must exit within about its drain timeout even
    with an orders worker frozen (it cannot act on SIGTERM, so it is killed).
    """
    row = Row("modrpc up Ctrl-C (one worker hung)")
    up = suite.cluster.up
    assert up is not None
    exited = asyncio.get_running_loop().create_future()
    # The worst case for the time it takes: a worker that cannot act on its SIGTERM.
    hung = (await suite.cluster.wait_workers("orders", 2))[0]

    async def interrupt() -> None:
        await asyncio.sleep(1.0)
        os.kill(hung.pid, signal.SIGSTOP)
        started = time.monotonic()
        up.signal_group(signal.SIGINT)
        await up.process.wait()
        exited.set_result(time.monotonic() - started)

    outcomes = await suite.under_load(row, length, interrupt)
    took = await exited
    refused = sum(o.codes["UNAVAILABLE"] for o in outcomes)
    row.unavoidable += refused
    # Calls refused once the gateway stopped cannot be made: they are not idempotent failures.
    row.failed_idempotent -= sum(o.codes["UNAVAILABLE"] for o in outcomes if o.idempotent)
    row.notes.append(
        f"exited with code {up.process.returncode} {took:.1f}s after Ctrl-C (drain timeout "
        f"{DRAIN_SECONDS:g}s); {refused} calls refused UNAVAILABLE after it, "
        f"{sum(o.codes['CANCELLED'] for o in outcomes)} CANCELLED"
    )
    if not _alive_process(hung.pid):
        row.notes.append("the frozen worker was killed, not left behind")
    else:
        row.unavoidable -= 1
        row.notes.append("the frozen worker outlived modrpc up")
    # Within the drain timeout, and a moment for the supervisor's own exit.
    if up.process.returncode != 0 or took > DRAIN_SECONDS + 1:
        row.unavoidable -= 1  # marks the row failed: the exit was not clean and in time
    return row


def _alive_process(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


Scenario = Callable[[Suite, float], Awaitable[Row]]

SHORT: list[tuple[Scenario, float]] = [
    (worker_killed, 8.0),
    (worker_hung, 10.0),
    (nats_down, 10.0),
    (postgres_down, 20.0),
]
"""The version ``make test`` runs: about a minute of faults."""

FULL: list[tuple[Scenario, float]] = [
    (worker_killed, 15.0),
    (worker_hung, 20.0),
    (worker_drained, 12.0),
    (nats_down, 20.0),
    (postgres_down, 25.0),
    (orders_killed_store_down, 16.0),
    (postgres_hung, 15.0),
    (redis_down, 12.0),
    (gateway_drained, 12.0),
    (ctrl_c, 6.0),
]
"""``make faults``."""


async def run(root: Path, scenarios: list[tuple[Scenario, float]], *, report: Callable[[Row], None] = print) -> list[Row]:
    """Start the cluster in ``root``, play ``scenarios`` in order, and return their rows."""
    rows: list[Row] = []
    async with Cluster(root) as cluster:
        audit = EventAudit(cluster.nats.url)
        await audit.start()
        try:
            suite = Suite(cluster, audit)
            await suite.seed()
            for scenario, length in scenarios:
                await suite.settle()
                row = await scenario(suite, length)
                rows.append(row)
                report(row)
        finally:
            await audit.close()
    return rows
