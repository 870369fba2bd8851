"""Replays run by the workers' sandbox, as the playground asks for them (Properties 37, 45, 46).

Real users, inventory and orders workers on 127.0.0.1 share one SQLite manifest store; the
playground's :class:`~runtime.playground._snapshots.Snapshots` lists the stored snapshots and
asks a live worker of the snapshot's module to replay it, over gRPC, as it does under
``modrpc up``.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gen.inventory.v2025_01_15 import inventory_pb2
from gen.inventory.v2025_01_15.client import InventoryClient
from gen.orders.v2025_01_15 import orders_pb2
from gen.orders.v2025_01_15.client import OrdersClient
from gen.users.v2025_06_01 import users_pb2
from gen.users.v2025_06_01.client import UsersClient
from modules.users.hooks import note_caller
from runtime.config import Settings
from runtime.errors import NotFound
from runtime.identity import PRINCIPAL_HEADER, Peer
from runtime.playground._snapshots import Snapshots
from runtime.tls import InternalTls
from runtime.wire import SANDBOX_SERVICE
from tests.conftest import SNAPSHOT_ROLES, Dial, StartWorker

ROLE = "playground:admin"
name_part = st.text(alphabet=st.characters(categories=("L",)), min_size=1, max_size=12)


@dataclass
class Shop:
    users: UsersClient
    inventory: InventoryClient
    orders: OrdersClient
    snapshots: Snapshots
    users_address: str

    async def new_user(self, given: str = "Grace", family: str = "Hopper") -> str:
        user = await self.users.create_user(
            users_pb2.CreateUserRequest(given_name=given, family_name=family, email=f"s-{uuid.uuid4().hex[:12]}@example.com"),
            timeout=5,
        )
        return user.id

    async def stock(self, sku: str) -> int:
        return (await self.inventory.get_stock(inventory_pb2.GetStockRequest(sku=sku), timeout=5)).available

    async def snapshot_of(self, request_id: str) -> str:
        (found,) = [s for s in await self.snapshots.recent() if s["request_id"] == request_id]
        return str(found["id"])


@pytest.fixture
async def shop(
    start_worker: StartWorker, worker_settings: Callable[..., Settings], dial: Dial, tls_dir: Path
) -> AsyncIterator[Shop]:
    settings = worker_settings(auth=SNAPSHOT_ROLES)
    assert settings.playground_on  # loopback and an admin port: the sandbox is served
    users = await start_worker("users", settings=settings)
    inventory = await start_worker("inventory", settings=settings)
    orders = await start_worker("orders", settings=settings)
    snapshots = Snapshots(orders.store, role=ROLE, tls=InternalTls.load(tls_dir, Peer.gateway(), dev_ca=True))
    async with dial(users) as u, dial(inventory) as i, dial(orders) as o:
        yield Shop(UsersClient(u), InventoryClient(i), OrdersClient(o), snapshots, users.address)
    await snapshots.close()


async def get_user_snapshot(shop: Shop, user_id: str) -> str:
    request_id = f"snap-{uuid.uuid4().hex}"
    await shop.users.get_user(
        users_pb2.GetUserRequest(id=user_id), metadata=[("x-request-id", request_id), ("x-flags", "snapshot")], timeout=5
    )
    return await shop.snapshot_of(request_id)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(given_name=name_part, family_name=name_part)
async def test_a_snapshot_replays_at_every_version_and_the_replays_diff(shop: Shop, given_name: str, family_name: str) -> None:
    """Property 45: A snapshot can be replayed against any version.
    Property 46: Replays are diffed.

    A users.GetUser snapshot (recorded at 2025-06-01) replayed at 2025-01-15 answers in that
    version's shape, through the real backward transformer; at 2025-06-01 in the new shape. The
    diff of the two is exactly the renamed fields, and their traces differ by the transform step.
    """
    user_id = await shop.new_user(given_name, family_name)
    snapshot = await get_user_snapshot(shop, user_id)
    answer = await shop.snapshots.replay(snapshot, ["2025-06-01", "2025-01-15"], live=False, subject="test")
    new, old = answer["replays"]
    assert (new["status"], old["status"]) == ("OK", "OK")
    assert new["version"] == "2025-06-01" and old["version"] == "2025-01-15"
    assert (new["response"]["given_name"], new["response"]["family_name"]) == (given_name, family_name)
    assert old["response"]["name"] == f"{given_name} {family_name}"
    assert "given_name" not in old["response"]
    diff = answer["diff"]
    assert {(c["path"], c["kind"]) for c in diff["response"]} == {
        ("name", "added"), ("given_name", "removed"), ("family_name", "removed"),
    }  # fmt: skip
    assert [(c["op"], c["after"]) for c in diff["trace"]] == [
        ("insert", [["transform", "users 2025-01-15 -> 2025-06-01 backward GetUser"]])
    ]
    # The replay ran the real lifecycle, hooks included, with a request id of its own.
    assert ["hook_start", "note-caller"] in new["trace"] and new["request_id"] != old["request_id"]


async def test_a_sandboxed_replay_answers_module_calls_from_the_record_and_writes_nothing(shop: Shop) -> None:
    """The orders.PlaceOrder snapshot holds the users and inventory calls it made; a sandboxed
    replay gets the same answers without reaching inventory (stock unchanged), a live one
    reserves again."""
    user_id = await shop.new_user()
    request_id = f"order-{uuid.uuid4().hex}"
    await shop.orders.place_order(
        orders_pb2.PlaceOrderRequest(user_id=user_id, items=[orders_pb2.OrderItem(sku="WIDGET-1", quantity=2)]),
        metadata=[("x-request-id", request_id)],
        timeout=10,
    )
    snapshot = await shop.snapshot_of(request_id)
    stored = await shop.snapshots.load(snapshot)
    assert [(e["kind"], e["target"], e["status"]) for e in stored["effects"]] == [
        ("module_call", "users.GetUser", "OK"), ("module_call", "inventory.Reserve", "OK"),
    ]  # fmt: skip
    assert stored["effects"][1]["request"] == {"sku": "WIDGET-1", "quantity": 2, "order_id": stored["effects"][1]["request"]["order_id"]}

    before = await shop.stock("WIDGET-1")
    (sandboxed,) = (await shop.snapshots.replay(snapshot, ["2025-01-15"], live=False, subject="test"))["replays"]
    assert sandboxed["status"] == "OK", sandboxed
    assert await shop.stock("WIDGET-1") == before, "a sandboxed replay reserved stock"
    assert sandboxed["response"]["reservation_ids"] == [stored["effects"][1]["response"]["reservation_id"]]
    assert [e["target"] for e in sandboxed["effects"]] == ["users.GetUser", "inventory.Reserve"]
    assert ["module_call", "inventory.Reserve"] in sandboxed["trace"]

    (live,) = (await shop.snapshots.replay(snapshot, ["2025-01-15"], live=True, subject="test"))["replays"]
    assert live["status"] == "OK", live
    assert await shop.stock("WIDGET-1") == before - 2, "a live replay reserves for real"


async def test_a_hook_recorded_in_the_manifest_plays_back_against_a_snapshot(shop: Shop) -> None:
    """Property 37: Hooks are recorded in the manifest.

    The users module declares the before hook ``note-caller``; the playground plays it back
    alone against a stored GetUser request and sees what it did to the state.
    """
    user_id = await shop.new_user()
    snapshot = await get_user_snapshot(shop, user_id)
    played = await shop.snapshots.play_hook(snapshot, "note-caller", subject="test")
    assert played["status"] == "OK", played
    assert played["hook"]["phase"] == "before" and played["hook"]["level"] == "module"
    line = inspect.getsourcelines(note_caller)[1]
    assert played["hook"]["source"].endswith(f"modules/users/hooks.py:{line}"), played["hook"]
    assert played["state_after"]["caller"] == "ada"  # the caller the gateway named, in the snapshot
    with pytest.raises(NotFound, match=r"has no hook 'nope' in its manifest \(it has: note-caller\)"):
        await shop.snapshots.play_hook(snapshot, "nope", subject="test")


async def test_the_sandbox_refuses_callers_without_the_role_and_bad_requests(shop: Shop, dial: Dial) -> None:
    user_id = await shop.new_user()
    snapshot = await get_user_snapshot(shop, user_id)
    body = json.dumps({"snapshot": snapshot, "version": "2025-06-01"}).encode()
    async with dial(shop.users_address, "users", as_peer=Peer.client("developer")) as channel:
        # not the gateway: whatever principal it names, no replay
        replay = channel.unary_unary(f"/{SANDBOX_SERVICE}/Replay", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await replay(body, metadata=[(PRINCIPAL_HEADER, f"ada;{ROLE};jwt")], timeout=5)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "asked for by the gateway's playground" in (denied.value.details() or "")
    async with dial(shop.users_address, "users", roles=()) as channel:
        replay = channel.unary_unary(f"/{SANDBOX_SERVICE}/Replay", request_serializer=None, response_deserializer=None)
        for principal in (None, "mallory;users:read;jwt"):
            metadata = [] if principal is None else [(PRINCIPAL_HEADER, principal)]
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await replay(body, metadata=metadata, timeout=5)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert ROLE in (denied.value.details() or "")
        allowed = [(PRINCIPAL_HEADER, f"ada;{ROLE};jwt")]
        for bad, code, text in (
            (b"not json", grpc.StatusCode.INVALID_ARGUMENT, "JSON object"),
            (json.dumps({"snapshot": snapshot}).encode(), grpc.StatusCode.INVALID_ARGUMENT, "'version'"),
            (json.dumps({"snapshot": "999999999", "version": "stable"}).encode(), grpc.StatusCode.NOT_FOUND, "999999999"),
            (json.dumps({"snapshot": snapshot, "version": "2020-01-01"}).encode(), grpc.StatusCode.NOT_FOUND, "2020-01-01"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await replay(bad, metadata=allowed, timeout=5)
            assert refused.value.code() == code and text in (refused.value.details() or ""), refused.value
        answer: Any = json.loads(await replay(body, metadata=allowed, timeout=5))
        assert answer["status"] == "OK" and answer["version"] == "2025-06-01"


async def test_a_replay_of_another_module_names_the_worker_to_ask(shop: Shop, dial: Dial) -> None:
    user_id = await shop.new_user()
    request_id = f"order-{uuid.uuid4().hex}"
    await shop.orders.place_order(
        orders_pb2.PlaceOrderRequest(user_id=user_id, items=[orders_pb2.OrderItem(sku="WIDGET-1", quantity=1)]),
        metadata=[("x-request-id", request_id)],
        timeout=10,
    )
    snapshot = await shop.snapshot_of(request_id)
    async with dial(shop.users_address, "users") as channel:
        replay = channel.unary_unary(f"/{SANDBOX_SERVICE}/Replay", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await replay(
                json.dumps({"snapshot": snapshot, "version": "2025-01-15"}).encode(),
                metadata=[(PRINCIPAL_HEADER, f"ada;{ROLE};jwt")], timeout=5,
            )  # fmt: skip
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ask a worker of orders" in (wrong.value.details() or "")
