"""Bounded load through the gateway, and a count of every outcome.

Each loop calls one method again and again until its stop event is set (the scenario sets it),
pausing between calls so the load stays bounded. Every call has a deadline; every outcome is
counted by status code, with a sample of the details of each failure.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from gen.orders.v2025_01_15 import orders_pb2
from gen.orders.v2025_01_15.client import OrdersClient
from gen.users.v2025_06_01 import users_pb2
from gen.users.v2025_06_01.client import UsersClient

__all__ = ["Outcomes", "create_users", "get_users", "place_orders", "retrying_channel"]

CALL_TIMEOUT = 2.0
"""The caller's deadline; the gateway caps it at the method's own ``timeout``."""


@dataclass
class Outcomes:
    """What the calls of one method came to."""

    method: str
    idempotent: bool
    codes: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)
    """One details text per failing status code."""
    created: list[str] = field(default_factory=list)
    """CreateUser: ids of the users created (each must publish one ``users.created``)."""
    failed_emails: list[str] = field(default_factory=list)
    """CreateUser: emails of the calls that failed (none may have been saved)."""
    succeeded: list[str] = field(default_factory=list)
    """PlaceOrder: request ids of the calls that succeeded (each must get its snapshot stored)."""

    @property
    def calls(self) -> int:
        return sum(self.codes.values())

    @property
    def failed(self) -> int:
        return self.calls - self.codes["OK"]

    def record(self, error: grpc.aio.AioRpcError | None) -> None:
        if error is None:
            self.codes["OK"] += 1
            return
        name = error.code().name
        self.codes[name] += 1
        self.samples.setdefault(name, error.details() or "")

    def describe(self) -> str:
        failures = [f"{n} {code}: {self.samples.get(code, '')[:120]!r}" for code, n in self.codes.items() if code != "OK"]
        return f"{self.method} {self.calls} calls" + (f" ({'; '.join(failures)})" if failures else "")


def metadata(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def _loop(stop: asyncio.Event, pause: float, call: Callable[[], Awaitable[None]]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        await call()
        await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))


async def get_users(
    channel: grpc.aio.Channel, token: str, ids: list[str], stop: asyncio.Event, *, loops: int, rate: float
) -> Outcomes:
    """``users.GetUser`` (idempotent) of known users, ``loops`` at a time, about ``rate`` per second."""
    outcomes = Outcomes("GetUser", idempotent=True)
    users = UsersClient(channel, metadata=metadata(token))

    async def call() -> None:
        try:
            await users.get_user(users_pb2.GetUserRequest(id=random.choice(ids)), timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            outcomes.record(exc)
        else:
            outcomes.record(None)

    await asyncio.gather(*(_loop(stop, loops / rate, call) for _ in range(loops)))
    return outcomes


async def create_users(channel: grpc.aio.Channel, token: str, stop: asyncio.Event, *, rate: float) -> Outcomes:
    """``users.CreateUser`` (not idempotent; publishes ``users.created``), about ``rate`` per second."""
    outcomes = Outcomes("CreateUser", idempotent=False)
    users = UsersClient(channel, metadata=metadata(token))

    async def call() -> None:
        email = f"f-{uuid.uuid4().hex[:12]}@example.com"
        request = users_pb2.CreateUserRequest(given_name="Fault", family_name="Suite", email=email)
        try:
            user = await users.create_user(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            outcomes.record(exc)
            outcomes.failed_emails.append(email)
        else:
            outcomes.record(None)
            outcomes.created.append(user.id)

    await _loop(stop, 1 / rate, call)
    return outcomes


async def place_orders(
    channel: grpc.aio.Channel, token: str, user_id: str, stop: asyncio.Event, *, rate: float
) -> Outcomes:
    """``orders.PlaceOrder`` (a saga over users and inventory, snapshot on), about ``rate`` per second."""
    outcomes = Outcomes("PlaceOrder", idempotent=False)
    orders = OrdersClient(channel, metadata=metadata(token))
    item = orders_pb2.OrderItem(sku="WIDGET-1", quantity=1)

    async def call() -> None:
        request_id = f"fault-order-{uuid.uuid4().hex}"
        try:
            await orders.place_order(
                orders_pb2.PlaceOrderRequest(user_id=user_id, items=[item]),
                timeout=CALL_TIMEOUT * 3, metadata=(("x-request-id", request_id),),
            )  # fmt: skip
        except grpc.aio.AioRpcError as exc:
            outcomes.record(exc)
        else:
            outcomes.record(None)
            outcomes.succeeded.append(request_id)

    await _loop(stop, 1 / rate, call)
    return outcomes


def saved(data_dir: Path, emails: list[str]) -> list[str]:
    """Which of ``emails`` the users module saved (read straight from its SQLite file)."""
    if not emails:
        return []
    with sqlite3.connect(data_dir / "users.sqlite3", timeout=10) as db:
        marks = ",".join("?" * len(emails))
        return [row[0] for row in db.execute(f"SELECT email FROM users WHERE email IN ({marks})", emails)]


def retrying_channel(addresses: list[str]) -> grpc.aio.Channel:
    """A channel over several gateways, round robin, retrying UNAVAILABLE as gRPC clients do.

    This is how a client is expected to treat a gateway that is draining: UNAVAILABLE means the
    call was not run, so it goes to another gateway.
    """
    config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
    target = "ipv4:" + ",".join(addresses)
    return grpc.aio.insecure_channel(target, options=[("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 1)])
