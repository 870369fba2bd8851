"""Honest refusals and privileges at the gateway, over real sockets.

- ``x-flags: snapshot`` is a privilege: from anyone without a role in ``auth.snapshot_roles``
  the gateway drops it, so nothing is stored; a method's own ``snapshot`` policy still applies.
- An unknown method is UNIMPLEMENTED with the call's ``x-request-id``, and counted.
- ``grpc.health.v1.Health/List`` answers every service the server knows; every health answer
  carries ``x-request-id``, and a Check of an unknown service names it.
"""

from __future__ import annotations

import uuid

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.lcc import LogSnapshotStore
from runtime.store import open_store
from runtime.wire import method_path, request_message
from tests.conftest import Dial
from tests.fixtures.gateway_modules.stack import GatewayStack

USERS_ROLES = ("users:read", "users:write")


async def _snapshots(store_url: str) -> list[str]:
    async with open_store(store_url) as store:
        return await LogSnapshotStore(store).list()


async def test_an_anonymous_or_unprivileged_snapshot_flag_stores_nothing(gw_stack: GatewayStack) -> None:
    auth = {"snapshot_roles": ["ops"]}  # one configuration for gateway and workers, as deployed
    await gw_stack.worker("users", auth=auth)
    await gw_stack.worker("inventory", auth=auth)
    gateway = await gw_stack.gateway(ready=["users", "inventory"], auth=auth)
    client = gw_stack.client(gateway)
    flag = [("x-flags", "snapshot")]
    store_url = gateway.settings.store_url

    # The public GetStock, anonymously, with a big input: the flag is dropped at the door.
    anonymous = await client.call("inventory", "GetStock", {"sku": "X" * 100_000}, metadata=flag)
    assert anonymous.code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    token = gw_stack.token(*USERS_ROLES)
    email = f"flag-{uuid.uuid4().hex[:10]}@example.com"
    created = await client.call(
        "users", "CreateUser", {"given_name": "A", "family_name": "B", "email": email},
        token=token, metadata=flag,
    )  # fmt: skip
    assert created.ok, created.details
    assert await _snapshots(store_url) == []

    ops = gw_stack.token(*USERS_ROLES, "ops")
    privileged = await client.call("users", "GetUser", {"id": created.body["id"]}, token=ops, metadata=flag)  # type: ignore[index]
    assert privileged.ok, privileged.details
    refused = await client.call(
        "users", "CreateUser", {"given_name": "", "family_name": "B", "email": "nope"},
        token=ops, metadata=flag,
    )  # fmt: skip
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(await _snapshots(store_url)) == 1  # the valid call; the refused one is not kept


async def test_an_unknown_method_is_unimplemented_with_a_request_id_and_counted(gw_stack: GatewayStack) -> None:
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    client = gw_stack.client(gateway)
    reply = await client.call_raw("/users.v1.UsersService/DropUser", b"", metadata=[("x-request-id", "probe-0001")])
    assert reply.code == grpc.StatusCode.UNIMPLEMENTED
    assert reply.request_id == "probe-0001"
    assert "unknown method /users.v1.UsersService/DropUser" in reply.details
    assert "probe-0001" in reply.details
    # A streaming call to an unknown path gets the same answer.
    # It sends nothing: a message written after the answer came back would fail in the client
    # ("Failed execute_batch", INTERNAL) however the server answered.
    stream = client.channel.stream_stream("/ghosts.v1.Ghosts/Haunt")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream(iter(())):
            pass
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    rendered = gateway.metrics.render().decode()
    assert 'method="(unknown method)"' in rendered and 'code="UNIMPLEMENTED"' in rendered


async def test_health_list_answers_every_service_on_the_gateway_and_the_worker(
    gw_stack: GatewayStack, dial: Dial
) -> None:
    worker = await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    for channel in (grpc.aio.insecure_channel(gateway.address), dial(worker)):  # the worker: mutual TLS
        async with channel:
            health = health_pb2_grpc.HealthStub(channel)
            call = health.List(health_pb2.HealthListRequest(), metadata=[("x-request-id", "health-0001")])
            listed = await call
            assert ("x-request-id", "health-0001") in tuple(await call.trailing_metadata())
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await health.Check(health_pb2.HealthCheckRequest(service="ghosts.v1.Ghosts"))
        assert listed.statuses["users.v1.UsersService"].status == health_pb2.HealthCheckResponse.SERVING
        assert "" in listed.statuses
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert unknown.value.details() == "unknown service 'ghosts.v1.Ghosts'"
        assert dict(unknown.value.trailing_metadata() or ())["x-request-id"], "a generated request id"


async def test_a_worker_honours_the_snapshot_flag_only_for_the_configured_roles(
    gw_stack: GatewayStack, dial: Dial
) -> None:
    """Peers other than the gateway reach a worker too (a module, a developer's certificate), so
    the worker checks ``auth.snapshot_roles`` again, for the principal the call acts for."""
    worker = await gw_stack.worker("users", auth={"snapshot_roles": ["ops"]})
    assert worker.service is not None
    catalog = worker.service.catalog
    wire = catalog.wire(catalog.latest.id)
    create = method_path("users", "CreateUser")
    flag = (("x-flags", "snapshot"),)
    for roles in (USERS_ROLES, (*USERS_ROLES, "ops")):
        email = f"worker-flag-{uuid.uuid4().hex[:10]}@example.com"
        payload = wire.encode(request_message("CreateUser"), {"given_name": "A", "family_name": "B", "email": email})
        async with dial(worker, roles=roles) as channel:
            await channel.unary_unary(create)(payload, metadata=flag, timeout=10)
    kept = await _snapshots(worker.settings.store_url)
    assert len(kept) == 1, "only the call made for a principal holding 'ops' is kept"
