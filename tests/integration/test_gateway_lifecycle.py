"""The gateway and the version lifecycle, and what it forwards to workers.

- A call at a cold version asks for its promotion; the gateway's usage reporter writes it, with
  the call counts, to the store, where every gateway's counts add up.
- A retired version is refused with NOT_FOUND naming it as retired, while others keep serving.
- ``x-forwarded-for`` is maintained: the caller's chain plus the peer the gateway saw.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import grpc
import pytest

from runtime.errors import Unavailable
from runtime.store import WorkerRecord
from runtime.versions import UsageLedger, apply_retirement, retirement_plan, set_override, state_of
from tests.conftest import serve_as
from tests.fixtures.gateway_modules.stack import GatewayStack

pytestmark = pytest.mark.integration

READ = "users:read"


async def test_a_call_at_a_cold_version_promotes_it_and_usage_reaches_the_store(
    gw_stack: GatewayStack,
) -> None:
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    client = gw_stack.client(gateway)
    assert "2025-01-15" in gateway.table.modules["users"].cold

    reply = await client.call(
        "users", "GetUser", {"id": "nobody"}, version="2025-01-15", token=gw_stack.token(READ)
    )
    assert reply.code == grpc.StatusCode.NOT_FOUND  # the call reached the worker
    services = gateway._services
    assert services is not None and services.reporter is not None
    await services.reporter.flush()

    record = await gateway.store.get_version("users", "2025-01-15")
    assert state_of(record.metadata) == "warm"
    ledger = UsageLedger("users")
    await ledger.refresh(gateway.store)
    assert ledger.usage()["2025-01-15"].calls_since(time.time() - 60) == 1


async def test_a_retired_version_is_refused_by_name_and_the_others_still_serve(
    gw_stack: GatewayStack,
) -> None:
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    client = gw_stack.client(gateway)
    store = gateway.store
    await set_override(store, "users", "2025-01-15", "retire")
    plan = await retirement_plan(store, "users", now=time.time())
    assert list(plan.to_retire) == ["2025-01-15"]
    await apply_retirement(store, "users", plan)
    await gateway.refresh()

    token = gw_stack.token(READ)
    old = await client.call("users", "GetUser", {"id": "x"}, version="2025-01-15", token=token)
    assert old.code == grpc.StatusCode.NOT_FOUND
    assert "retired" in old.details and "2025-01-15" in old.details
    current = await client.call("users", "GetUser", {"id": "x"}, token=token)
    assert current.code == grpc.StatusCode.NOT_FOUND and "no user" in current.details


async def test_a_worker_starting_after_a_retirement_does_not_bring_the_version_back(
    gw_stack: GatewayStack,
) -> None:
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    store = gateway.store
    await set_override(store, "users", "2025-01-15", "retire")
    await apply_retirement(store, "users", await retirement_plan(store, "users", now=time.time()))
    await gw_stack.worker("users")  # scaled out, or restarted: it publishes its versions again
    await gateway.refresh()
    assert state_of((await store.get_version("users", "2025-01-15")).metadata) == "retired"
    assert "2025-01-15" in gateway.table.modules["users"].retired
    old = await gw_stack.client(gateway).call(
        "users", "GetUser", {"id": "x"}, version="2025-01-15", token=gw_stack.token(READ)
    )
    assert old.code == grpc.StatusCode.NOT_FOUND and "retired" in old.details


async def test_x_forwarded_for_carries_the_callers_chain_and_the_peer(
    gw_stack: GatewayStack, tls_dir: Path
) -> None:
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    seen: list[dict[str, str]] = []

    async def get_user(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        seen.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        return b""

    spy = grpc.aio.server()
    spy.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "users.v1.UsersService", {"GetUser": grpc.unary_unary_rpc_method_handler(get_user)}
            ),
        )
    )
    port = serve_as(spy, "users", tls_dir)
    await spy.start()
    try:
        # The spy replaces the real worker in the store: the gateway's only users instance.
        for worker in await gateway.store.list_workers("users"):
            await gateway.store.deregister_worker(worker.id)
        now = time.time()
        await gateway.store.register_worker(
            WorkerRecord(
                id="spy",
                module="users",
                address=f"127.0.0.1:{port}",
                versions=("2025-06-01",),
                pid=os.getpid(),
                started_at=now,
                last_seen=now,
            )
        )
        await gateway.refresh()
        client = gw_stack.client(gateway)
        reply = await client.call(
            "users", "GetUser", {"id": "x"}, token=gw_stack.token(READ),
            metadata=[("x-forwarded-for", "203.0.113.7")],
        )  # fmt: skip
        assert reply.code == grpc.StatusCode.OK
        assert seen[-1]["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
        assert "x-request-id" in seen[-1] and seen[-1]["x-api-version"] == "2025-06-01"
    finally:
        await spy.stop(0)


async def test_a_gateway_that_is_not_ready_says_what_it_waits_for(gw_stack: GatewayStack) -> None:
    gateway = await gw_stack.gateway()
    with pytest.raises(Unavailable, match=r"not ready after 0.3s: no module has a served version \(known modules: none\)"):
        await gateway.wait_ready(timeout=0.3)
    with pytest.raises(Unavailable, match=r"not ready after 0.3s: no worker serves users, orders"):
        await gateway.wait_ready(["users", "orders"], timeout=0.3)


class _StoreOutage:
    """The gateway's store, as seen through an outage: reads fail while ``down`` is set."""

    def __init__(self, store: object) -> None:
        self._store = store
        self.down = False

    def __getattr__(self, name: str) -> object:
        if self.down and name in ("list_workers", "modules"):
            raise Unavailable("manifest store is unavailable (an outage, played by the test)")
        return getattr(self._store, name)


async def test_workers_that_could_not_heartbeat_through_a_store_outage_are_not_stale_when_it_returns(
    gw_stack: GatewayStack,
) -> None:
    """Backend return is not an outage: after the store comes back, workers get the staleness
    limit again to heartbeat before any is dropped, instead of being judged by heartbeats the
    outage made impossible."""
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    store = gateway.store
    # The worker's last heartbeat before a 30-second outage (WORKER_STALE_SECONDS is 10).
    (record,) = await store.list_workers("users")
    await store.register_worker(dataclasses.replace(record, last_seen=time.time() - 30))
    outage = gateway.store = _StoreOutage(store)
    outage.down = True
    with pytest.raises(Unavailable):
        await gateway.refresh()
    assert gateway.table.modules["users"].served, "during the outage the cached routes keep serving"
    outage.down = False
    await gateway.refresh()
    assert gateway.table.modules["users"].served, "the store's return did not drop the worker"
    client = gw_stack.client(gateway)
    reply = await client.call("users", "GetUser", {"id": "nobody"}, token=gw_stack.token(READ))
    assert reply.code == grpc.StatusCode.NOT_FOUND  # served by the worker


async def test_a_worker_silent_while_the_store_is_there_is_stale(gw_stack: GatewayStack) -> None:
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    (record,) = await gateway.store.list_workers("users")
    await gateway.store.register_worker(dataclasses.replace(record, last_seen=time.time() - 30))
    await gateway.refresh()
    assert not gateway.table.modules["users"].served


async def test_a_call_while_no_worker_serves_waits_for_one_within_its_deadline(gw_stack: GatewayStack) -> None:
    worker = await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    await worker.stop()  # it deregisters: nothing serves users now
    await gateway.refresh()
    assert not gateway.table.modules["users"].served
    client = gw_stack.client(gateway)
    fields = {"given_name": "Ada", "family_name": "Lovelace", "email": f"wait-{time.time_ns()}@example.com"}
    # CreateUser's timeout is 2 s: time for a worker to come back.
    call = asyncio.create_task(client.call("users", "CreateUser", fields, token=gw_stack.token("users:write")))
    await asyncio.sleep(0.3)
    assert not call.done(), "the call waits for a worker instead of failing at once"
    await gw_stack.worker("users")  # a restarted worker registers; the gateway sees it
    await gateway.refresh()
    reply = await asyncio.wait_for(call, 10)
    assert reply.code == grpc.StatusCode.OK, reply  # answered by the new worker


async def test_a_call_waiting_for_a_worker_when_the_gateway_stops_is_unavailable_not_cancelled(
    gw_stack: GatewayStack,
) -> None:
    worker = await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    await worker.stop()
    await gateway.refresh()
    client = gw_stack.client(gateway)
    call = asyncio.create_task(
        client.call("users", "GetUser", {"id": "nobody"}, token=gw_stack.token(READ), timeout=5.0)
    )
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await gateway.stop(grace=3.0)
    reply = await asyncio.wait_for(call, 10)
    assert reply.code == grpc.StatusCode.UNAVAILABLE, reply
    assert "shutting down" in reply.details
    assert time.monotonic() - started < 2.0, "the waiting call ended at once, not at the end of the grace"
