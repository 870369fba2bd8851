"""The embedded mode: modules served inside the gateway's process, reached without a socket.

A worker started with ``local=`` registers its endpoints in an :class:`InProcessModules`; a gateway
given the same transport calls them in process. To prove no call takes the network, each test
points the worker's record in the store at an address nobody listens on: a call that went over
a channel would fail with UNAVAILABLE.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2

from runtime.client import InstancePool as ChannelPool
from runtime.client import ModuleClient
from runtime.config import Settings
from runtime.errors import InvalidArgument, NotFound, Unauthenticated, Unimplemented
from runtime.gateway import Gateway
from runtime.store import WorkerRecord, open_store
from runtime.transport import InProcessModules as LocalTransport
from runtime.wire import method_path, request_message, response_message
from runtime.worker import Worker
from tests.conftest import principal_says
from tests.fixtures.gateway_modules.stack import GatewayClient, GatewayStack

NOBODY = "127.0.0.1:1"
"""An address no test server listens on."""


@dataclass
class Embedded:
    worker: Worker
    gateway: Gateway
    client: GatewayClient
    local: LocalTransport
    stack: GatewayStack


async def _unreachable(settings: Settings, worker: Worker) -> None:
    """Re-register ``worker`` at :data:`NOBODY`, so only the in-process path can answer."""
    assert worker.service is not None
    now = time.time()
    async with open_store(settings.store_url) as store:
        await store.register_worker(
            WorkerRecord(
                id=worker.worker_id, module=worker.module, address=NOBODY,
                versions=(worker.service.served,), healthy=True, pid=os.getpid(),
                started_at=now, last_seen=now,
            )
        )  # fmt: skip


@pytest.fixture
async def embedded(gw_settings: Callable[..., Settings]) -> AsyncIterator[Embedded]:
    settings = gw_settings()
    local = LocalTransport()
    worker = Worker("users", settings, host="127.0.0.1", port=0, local=local)
    await worker.start()
    await _unreachable(settings, worker)
    gateway = Gateway(settings, host="127.0.0.1", port=0, local=local)
    await gateway.start()
    stack = GatewayStack(gw_settings, start_worker=None)  # type: ignore[arg-type]  # only for tokens
    channel = grpc.aio.insecure_channel(gateway.address)
    try:
        await gateway.wait_ready(["users"], timeout=10.0)
        assert gateway.table.modules["users"].served == ("2025-06-01",)
        yield Embedded(worker, gateway, GatewayClient(channel, gateway), local, stack)
    finally:
        await channel.close(None)
        await gateway.stop(0.5)
        await worker.stop(0.5)


def unique_email() -> str:
    return f"embedded-{uuid.uuid4().hex[:12]}@example.com"


async def test_calls_through_an_embedded_gateway_are_served_in_process_at_every_version(embedded: Embedded) -> None:
    token = embedded.stack.token("users:read", "users:write")
    email = unique_email()
    created = await embedded.client.call(
        "users", "CreateUser", {"name": "Ada Lovelace", "email": email}, version="2025-01-15", token=token
    )
    assert created.ok, created.details
    assert created.body is not None and created.body["name"] == "Ada Lovelace"
    current = await embedded.client.call("users", "GetUser", {"id": created.body["id"]}, token=token)
    assert current.ok, current.details
    assert current.body is not None
    assert (current.body["given_name"], current.body["family_name"], current.body["email"]) == ("Ada", "Lovelace", email)
    assert current.request_id, "the gateway still answers with the request id"


async def test_a_workers_error_reaches_the_caller_of_an_embedded_gateway_with_its_details(embedded: Embedded) -> None:
    token = embedded.stack.token("users:read", "users:write")
    missing = await embedded.client.call("users", "GetUser", {"id": "nope"}, token=token)
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert "no user with id 'nope'" in missing.details
    bad = await embedded.client.call("users", "CreateUser", {"given_name": "Ada", "email": "not-an-email"}, token=token)
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.status is not None, "the worker's google.rpc details are relayed"
    request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(request) for detail in bad.status.details)
    assert [v.field for v in request.field_violations] == ["email"]


async def test_the_gateways_own_policies_still_apply_in_the_embedded_mode(embedded: Embedded) -> None:
    refused = await embedded.client.call("users", "GetUser", {"id": "x"}, token=embedded.stack.token("other"))
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    anonymous = await embedded.client.call("users", "GetUser", {"id": "x"})
    assert anonymous.code == grpc.StatusCode.UNAUTHENTICATED


async def test_a_module_client_reaches_local_endpoints_with_runtime_errors_for_failures(embedded: Embedded) -> None:
    wire = embedded.gateway.table.modules["users"].catalog.wire("2025-06-01")
    payload = wire.encode(request_message("CreateUser"), {"given_name": "Lin", "email": unique_email()})
    async with ModuleClient(ChannelPool(local=embedded.local)) as nobody:
        # in process too, a call made as no identity is refused: the endpoints check who calls
        with pytest.raises(Unauthenticated):
            await nobody.call("users", method_path("users", "CreateUser"), payload)
    async with ModuleClient(ChannelPool(local=embedded.local, tls=embedded.gateway.tls)) as client:
        body, metadata = await client.call(
            "users", method_path("users", "CreateUser"), payload,
            metadata=[("x-request-id", "local-1"), principal_says("ada", "users:read", "users:write")],
        )  # fmt: skip
        assert wire.decode(response_message("CreateUser"), body)["given_name"] == "Lin"
        assert ("x-request-id", "local-1") in metadata
        with pytest.raises(NotFound):
            await client.call(
                "users", method_path("users", "GetUser"), wire.encode(request_message("GetUser"), {"id": "?"}),
                metadata=[principal_says("ada", "users:read")],
            )  # fmt: skip
        with pytest.raises(InvalidArgument):
            await client.call(
                "users", method_path("users", "GetUser"), b"\xff\xff", metadata=[principal_says("ada", "users:read")]
            )
        with pytest.raises(Unimplemented):
            await client.call("users", "/users.v1.UsersService/Nope", b"")


async def test_a_stopped_embedded_worker_leaves_the_local_transport(embedded: Embedded) -> None:
    assert embedded.local.modules() == ("users",)
    await embedded.worker.stop(0.5)
    assert embedded.local.modules() == ()
    assert embedded.local.lookup("users@2025-06-01") is None
