"""A worker over a real socket: health, registration, and a precise status for every bad input.

Each test starts in-process :class:`runtime.worker.Worker` s on 127.0.0.1 port 0 and talks to
them through a real ``grpc.aio`` channel, with the generated ``users`` client where it exists
and a descriptor-built client for the test-only ``probe`` module. After every bad input the
same worker must still answer a good call: bad input may fail its own call and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from gen.orders.v2025_01_15 import orders_pb2
from gen.orders.v2025_01_15.client import OrdersClient
from gen.users.v2025_06_01 import users_pb2
from gen.users.v2025_06_01.client import UsersClient
from runtime.config import Settings
from runtime.store import open_store
from runtime.versions._catalog import decode_descriptor
from runtime.worker import Worker
from tests.conftest import PROBE_MODULES_DIR, Dial, StartWorker
from tests.fixtures.worker_modules.probe.handlers import SEEN
from tests.fixtures.worker_modules.probe_client import ProbeClient

USERS = "/users.v1.UsersService"


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture
async def users(start_worker: StartWorker) -> Worker:
    return await start_worker("users")


@pytest.fixture
async def channel(users: Worker, dial: Dial) -> AsyncIterator[grpc.aio.Channel]:
    async with dial(users) as ch:
        yield ch


@pytest.fixture
async def probe(start_worker: StartWorker) -> Worker:
    return await start_worker("probe", modules_dir=PROBE_MODULES_DIR)


@pytest.fixture
async def probe_client(probe: Worker, dial: Dial) -> AsyncIterator[ProbeClient]:
    assert probe.service is not None
    async with dial(probe) as ch:
        yield ProbeClient(ch, probe.service.catalog.latest.descriptor)


async def still_serves(channel: grpc.aio.Channel) -> None:
    """A good call on ``channel`` succeeds: the worker survived whatever came before."""
    email = unique_email()
    user = await UsersClient(channel).create_user(
        users_pb2.CreateUserRequest(given_name="Ada", family_name="Lovelace", email=email),
        timeout=5,
    )
    assert user.email == email and user.given_name == "Ada"


async def probe_still_serves(client: ProbeClient) -> None:
    reply, _ = await client.call("Echo", {"text": "still here"}, timeout=5)
    assert reply["text"] == "still here"


async def audited_outcome(worker: Worker, request_id: str) -> str:
    """The outcome in the audit record of ``request_id`` (written asynchronously)."""
    give_up = asyncio.get_running_loop().time() + 5
    while True:
        for _, record in await worker.store.read("audit", limit=100_000):
            if record["request_id"] == request_id:
                return str(record["outcome"])
        assert asyncio.get_running_loop().time() < give_up, f"no audit record for {request_id}"
        await asyncio.sleep(0.05)


async def rpc_error(call: asyncio.Future[object] | object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


# -- health and registration ---------------------------------------------------------------------


async def test_health_reports_serving_for_the_server_and_the_module_service(
    channel: grpc.aio.Channel,
) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "users.v1.UsersService"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    error = await rpc_error(
        stub.Check(health_pb2.HealthCheckRequest(service="orders.v1.OrdersService"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_a_started_worker_is_registered_with_its_versions_and_gone_after_stop(
    start_worker: StartWorker, worker_settings: Callable[..., Settings]
) -> None:
    settings = worker_settings()
    worker = await start_worker("users", settings=settings)
    async with open_store(settings.store_url) as store:  # a reader of its own, like a gateway
        (record,) = await store.list_workers("users")
        assert record.id == worker.worker_id
        assert record.address == worker.address
        assert record.versions == ("2025-06-01",)
        assert record.healthy is True

        versions = await store.list_versions("users")
        assert [v.id for v in versions] == ["2025-01-15", "2025-06-01"]
        assert await store.labels("users") == {"stable": "2025-06-01"}
        old, new = versions
        assert new.labels == ("stable",) and old.labels == ()
        assert new.parent == "2025-01-15" and new.breaking is True
        old_fields = _request_fields(old.metadata["descriptor"], "CreateUserRequest")
        new_fields = _request_fields(new.metadata["descriptor"], "CreateUserRequest")
        assert "name" in old_fields and "given_name" not in old_fields
        assert {"given_name", "family_name", "email"} <= new_fields and "name" not in new_fields

        await worker.stop()
        assert await store.list_workers("users") == []
        # versions are history, not presence: they stay for gateways and replays
        assert [v.id for v in await store.list_versions("users")] == ["2025-01-15", "2025-06-01"]


def _request_fields(encoded: str, message: str) -> set[str]:
    fdp = decode_descriptor(encoded)
    (msg,) = [m for m in fdp.message_type if m.name == message]
    assert [s.name for s in fdp.service] == ["UsersService"]
    return {f.name for f in msg.field}


async def test_a_fresh_worker_lists_its_drop_and_prune_counters_at_zero(start_worker: StartWorker) -> None:
    """Counters a dashboard alerts on are on ``/metrics`` from the start: a zero is told apart
    from a worker that does not report them."""
    worker = await start_worker("users")
    await asyncio.sleep(0.1)  # retention's first pass starts with the worker

    def scrape() -> str:
        with urllib.request.urlopen(f"http://{worker.metrics_address}/metrics", timeout=5) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(scrape)
    for name in (
        "modrpc_audit_dropped_total", "modrpc_snapshots_dropped_total",
        "modrpc_audit_pruned_total", "modrpc_snapshots_pruned_total",
    ):  # fmt: skip
        assert f"\n{name} 0.0\n" in text, name


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xff\xff\xff\xff", id="garbage"),
        pytest.param(b"\x0a\x20abc", id="truncated-string"),
        pytest.param(b"\x0d\x01\x02", id="truncated-fixed32"),
    ],
)
async def test_malformed_protobuf_is_invalid_argument_naming_the_message(
    channel: grpc.aio.Channel, payload: bytes
) -> None:
    raw = channel.unary_unary(f"{USERS}/CreateUser")
    error = await rpc_error(raw(payload, timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "users.v1.CreateUserRequest" in (error.details() or "")
    await still_serves(channel)


async def test_a_value_of_the_wrong_type_is_invalid_argument_naming_the_field(
    channel: grpc.aio.Channel,
) -> None:
    # given_name (3) as a string, email (2) as a varint: protobuf keeps the mismatched value
    # as an unknown field, so the request arrives without an email and validation names it.
    payload = b"\x1a\x03Ada" + b"\x10\x96\x01"
    error = await rpc_error(channel.unary_unary(f"{USERS}/CreateUser")(payload, timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["email"]
    await still_serves(channel)


@pytest.mark.parametrize("path", [f"{USERS}/DeleteUser", "/users.v1.Nothing/CreateUser", "/x/y"])
async def test_an_unknown_method_is_unimplemented(channel: grpc.aio.Channel, path: str) -> None:
    error = await rpc_error(channel.unary_unary(path)(b"", timeout=5))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    await still_serves(channel)


async def test_a_message_over_the_configured_maximum_is_resource_exhausted(
    start_worker: StartWorker, worker_settings: Callable[..., Settings],
    dial: Dial,
) -> None:
    worker = await start_worker("users", settings=worker_settings(max_message_bytes=1024))
    async with dial(worker) as channel:
        big = users_pb2.CreateUserRequest(given_name="A" * 4096, email=unique_email())
        error = await rpc_error(UsersClient(channel).create_user(big, timeout=5))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "1024" in (error.details() or "")  # names the limit
        await still_serves(channel)


async def test_invalid_fields_are_invalid_argument_with_bad_request_violations(
    channel: grpc.aio.Channel,
) -> None:
    bad = users_pb2.CreateUserRequest(given_name="", email="not-an-email")
    error = await rpc_error(UsersClient(channel).create_user(bad, timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    (detail,) = status.details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    violations = {v.field: v.description for v in bad_request.field_violations}
    assert set(violations) == {"given_name", "email"}
    assert "expected" in violations["email"] and "'not-an-email'" in violations["email"]
    assert "expected" in violations["given_name"] and "''" in violations["given_name"]
    await still_serves(channel)


async def test_an_unknown_user_is_not_found_naming_the_id(channel: grpc.aio.Channel) -> None:
    error = await rpc_error(
        UsersClient(channel).get_user(users_pb2.GetUserRequest(id="no-such-user"), timeout=5)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-user" in (error.details() or "")
    await still_serves(channel)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("1999-01-01", grpc.StatusCode.NOT_FOUND),
        ("tsv:1-users-9", grpc.StatusCode.NOT_FOUND),
        ("not a version!", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_an_unknown_or_unparsable_version_gets_a_precise_status(
    channel: grpc.aio.Channel, header: str, code: grpc.StatusCode
) -> None:
    call = channel.unary_unary(
        f"{USERS}/GetUser",
        request_serializer=users_pb2.GetUserRequest.SerializeToString,
        response_deserializer=users_pb2.GetUserResponse.FromString,
    )(users_pb2.GetUserRequest(id="x"), metadata=(("x-api-version", header),), timeout=5)
    error = await rpc_error(call)
    assert error.code() == code
    assert header in (error.details() or "")
    await still_serves(channel)


async def test_an_unexpected_exception_is_internal_without_its_text_or_trace(
    probe_client: ProbeClient,
) -> None:
    request_id = f"fail-{uuid.uuid4().hex}"
    error = await rpc_error(
        probe_client.call(
            "Fail", {"detail": "password=hunter2"}, metadata=[("x-request-id", request_id)]
        )
    )
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == f"internal error (request id {request_id})"
    leaked = repr(error.trailing_metadata()) + (error.debug_error_string() or "")
    for secret in ("hunter2", "probe failure", "RuntimeError", "Traceback", "handlers.py"):
        assert secret not in leaked
    await probe_still_serves(probe_client)


async def test_an_invalid_handler_response_is_internal_and_logged(
    probe_client: ProbeClient, caplog: pytest.LogCaptureFixture
) -> None:
    request_id = f"bad-response-{uuid.uuid4().hex}"
    with caplog.at_level(logging.ERROR):
        error = await rpc_error(
            probe_client.call("Malformed", {"count": 3}, metadata=[("x-request-id", request_id)])
        )
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == f"internal error (request id {request_id})"
    assert "count" not in (error.details() or "")
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        request_id in m and "probe.Malformed" in m and "count: expected integer >= 0, got -4" in m
        for m in logged
    ), logged
    await probe_still_serves(probe_client)


# -- handlers that block ---------------------------------------------------------------------------


async def test_a_sync_handler_runs_in_a_thread_and_does_not_block_other_calls(
    probe_client: ProbeClient,
) -> None:
    nap = asyncio.ensure_future(probe_client.call("Nap", {"seconds": 0.6}, timeout=5))
    await asyncio.sleep(0.1)  # let the nap start blocking its thread
    for i in range(3):
        reply, _ = await probe_client.call("Echo", {"text": f"during nap {i}"}, timeout=5)
        assert reply["text"] == f"during nap {i}"
    assert not nap.done(), "the async calls should finish while the sync handler still sleeps"
    napped, _ = await nap
    assert napped["thread"] != "MainThread"


# -- errors that must fit in trailing metadata -----------------------------------------------------


async def test_a_huge_invalid_value_is_quoted_in_brief(channel: grpc.aio.Channel) -> None:
    # Echoed whole, 50 000 characters would exceed grpc's 16 KiB metadata limit and reach the
    # caller as RESOURCE_EXHAUSTED "Stream removed" instead of the validation failure.
    bad = users_pb2.CreateUserRequest(given_name="A" * 50_000, email=unique_email())
    error = await rpc_error(UsersClient(channel).create_user(bad, timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "given_name: expected string of at most 200 characters" in (error.details() or "")
    assert len(error.details() or "") < 400
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    (violation,) = bad_request.field_violations
    assert violation.field == "given_name"
    assert violation.description.endswith("(50000 characters)")
    await still_serves(channel)


async def test_thousands_of_violations_are_listed_within_the_metadata_limit(
    start_worker: StartWorker,
    dial: Dial,
) -> None:
    orders = await start_worker("orders")
    request = orders_pb2.PlaceOrderRequest(
        user_id="u", items=[orders_pb2.OrderItem(sku="", quantity=0) for _ in range(2_000)]
    )
    async with dial(orders) as channel:
        error = await rpc_error(OrdersClient(channel).place_order(request, timeout=5))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(error)
        assert status is not None
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        fields = [v.field for v in bad_request.field_violations]
        assert fields[0] == "items" and "items[0].sku" in fields and "items[0].quantity" in fields
        assert status.ByteSize() <= 4096
        listed = len(fields)
        assert f"({4001 - listed} more violations not listed)" in (error.details() or "")
        # the worker is fine: the next call is judged on its own
        small = orders_pb2.PlaceOrderRequest(
            user_id="u", items=[orders_pb2.OrderItem(sku="", quantity=1)]
        )
        error = await rpc_error(OrdersClient(channel).place_order(small, timeout=5))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "items[0].sku" in (error.details() or "")


async def test_a_caller_that_goes_away_cancels_its_handler_and_cleanup_still_runs(
    probe: Worker, probe_client: ProbeClient
) -> None:
    # Echo's policy allows 10 s and it sleeps 8: only the caller's cancellation, passed on to
    # the lifecycle, ends it within the 2 s this test waits.
    request_id = f"gone-{uuid.uuid4().hex}"
    call = asyncio.ensure_future(
        probe_client.call(
            "Echo", {"text": "bye", "delay": 8}, metadata=[("x-request-id", request_id)]
        )
    )
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 5
    while request_id not in SEEN["started"]:
        assert loop.time() < give_up, "the handler never started"
        await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    give_up = loop.time() + 2
    while request_id not in SEEN["cleaned"]:
        assert loop.time() < give_up, "cleanup did not run"
        await asyncio.sleep(0.01)
    await probe_still_serves(probe_client)
    assert await audited_outcome(probe, request_id) == "CANCELLED"
