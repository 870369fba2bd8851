"""The gateway end to end over real sockets: a gateway and workers in this process, port 0.

Every test starts its own workers and gateway on one SQLite store in the test's tmp folder; the
gateway knows the workers only through that store, as in production. Calls go through a real
grpc.aio channel, encoded in the shape of the version they ask for (see
``tests/fixtures/gateway_modules/stack.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2

from runtime.gateway import Gateway, hash_api_key
from runtime.store import WorkerRecord, open_store
from tests.conftest import PROBE_MODULES_DIR, serve_as
from tests.fixtures.gateway_modules.stack import GatewayClient, GatewayStack, Reply

OK = grpc.StatusCode.OK
USERS_ROLES = ("users:read", "users:write")


def unique_email(who: str) -> str:
    return f"{who}-{uuid.uuid4().hex[:12]}@example.com"


async def register(store_url: str, record: WorkerRecord) -> None:
    """Register a worker record in the store the way a worker process would."""
    async with open_store(store_url) as store:
        await store.register_worker(record)


def worker_record(worker_id: str, address: str, version: str = "2025-06-01") -> WorkerRecord:
    now = time.time()
    return WorkerRecord(
        id=worker_id, module="users", address=address, versions=(version,), healthy=True,
        pid=os.getpid(), started_at=now, last_seen=now,
    )  # fmt: skip


# -- the README walkthrough ------------------------------------------------------------------------


async def test_user_created_at_2025_01_15_reads_back_split_at_stable_and_joined_at_the_old_version(
    gw_stack: GatewayStack,
) -> None:
    """The README flow: CreateUser with ``name`` at 2025-01-15, GetUser at stable and at 2025-01-15."""
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    client = gw_stack.client(gateway)
    token = gw_stack.token(*USERS_ROLES)
    email = unique_email("grace")

    created = await client.call(
        "users",
        "CreateUser",
        {"name": "Grace Hopper", "email": email},
        version="2025-01-15",
        token=token,
    )
    assert created.ok, created.details
    assert created.body is not None
    assert (created.body["name"], created.body["email"]) == ("Grace Hopper", email)
    assert "given_name" not in created.body

    current = await client.call("users", "GetUser", {"id": created.body["id"]}, token=token)
    assert current.ok, current.details
    assert current.body is not None
    assert (current.body["given_name"], current.body["family_name"]) == ("Grace", "Hopper")
    assert "name" not in current.body

    old = await client.call(
        "users", "GetUser", {"id": created.body["id"]}, version="2025-01-15", token=token
    )
    assert old.ok and old.body is not None
    assert old.body["name"] == "Grace Hopper"
    assert old.body["created_at"] == current.body["created_at"]


async def test_an_unknown_user_is_not_found_with_the_workers_message(
    gw_stack: GatewayStack,
) -> None:
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    reply = await gw_stack.client(gateway).call(
        "users", "GetUser", {"id": "nope"}, token=gw_stack.token("users:read")
    )
    assert reply.code == grpc.StatusCode.NOT_FOUND
    assert "no user with id 'nope'" in reply.details


# -- ingress: request ids and credentials ----------------------------------------------------------


async def test_a_valid_caller_request_id_is_kept_and_reaches_the_handler(
    gw_stack: GatewayStack, gw_modules: dict[str, Path]
) -> None:
    await gw_stack.worker("tally", tree=gw_modules["main"])
    gateway = await gw_stack.gateway(ready=["tally"])
    client = gw_stack.client(gateway)

    kept = await client.call(
        "tally", "Ping", {"text": "a"}, metadata=[("x-request-id", "trace-42.a:b_c")]
    )
    assert kept.ok and kept.body is not None
    assert kept.request_id == kept.body["request_id"] == "trace-42.a:b_c"

    replaced = await client.call(
        "tally", "Ping", {"text": "b"}, metadata=[("x-request-id", "has space")]
    )
    assert replaced.ok and replaced.body is not None
    assert replaced.request_id not in ("", "has space")
    assert replaced.body["request_id"] == replaced.request_id

    fresh = await client.call("tally", "Ping", {"text": "c"})
    assert fresh.ok and fresh.body is not None
    assert fresh.request_id and fresh.body["request_id"] == fresh.request_id != replaced.request_id


async def test_public_methods_need_no_credentials_and_others_do(
    gw_stack: GatewayStack, gw_modules: dict[str, Path]
) -> None:
    await gw_stack.worker("tally", tree=gw_modules["main"])
    gateway = await gw_stack.gateway(ready=["tally"])
    client = gw_stack.client(gateway)

    public = await client.call("tally", "Ping", {"text": "hi"})
    assert public.ok and public.body is not None
    assert public.body["subject"] == "anonymous"

    guarded = await client.call("tally", "Guarded", {"text": "hi"})
    assert guarded.code == grpc.StatusCode.UNAUTHENTICATED
    assert "missing credentials" in guarded.details
    assert guarded.request_id, "even a refused call gets its request id back"


async def test_api_keys_are_accepted_by_hash_and_carry_their_roles(
    gw_stack: GatewayStack, gw_modules: dict[str, Path]
) -> None:
    await gw_stack.worker("tally", tree=gw_modules["main"])
    keys = {
        "ops": {
            "hash": hash_api_key("k-ops-123"),
            "subject": "ops-bot",
            "roles": ["tally:read", "tally:admin"],
        }
    }
    gateway = await gw_stack.gateway(ready=["tally"], auth={"api_keys": keys})
    client = gw_stack.client(gateway)

    ok = await client.call("tally", "Guarded", {"text": "k"}, metadata=[("x-api-key", "k-ops-123")])
    assert ok.ok and ok.body is not None
    assert ok.body["subject"] == "ops-bot"

    bad = await client.call(
        "tally", "Guarded", {"text": "k"}, metadata=[("x-api-key", "k-ops-124")]
    )
    assert bad.code == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_without_every_required_role_is_permission_denied_naming_the_role(
    gw_stack: GatewayStack, gw_modules: dict[str, Path]
) -> None:
    await gw_stack.worker("tally", tree=gw_modules["main"])
    gateway = await gw_stack.gateway(ready=["tally"])
    client = gw_stack.client(gateway)

    denied = await client.call(
        "tally", "Guarded", {"text": "x"}, token=gw_stack.token("tally:read")
    )
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert "tally:admin" in denied.details

    allowed = await client.call(
        "tally", "Guarded", {"text": "x"}, token=gw_stack.token("tally:read", "tally:admin")
    )
    assert allowed.ok and allowed.body is not None
    assert allowed.body["subject"] == "ada"


async def test_over_the_rate_limit_is_resource_exhausted_with_retry_info(
    gw_stack: GatewayStack, gw_modules: dict[str, Path]
) -> None:
    """``tally.Limited`` allows 2 calls a minute per caller; the third gets RetryInfo."""
    await gw_stack.worker("tally", tree=gw_modules["main"])
    gateway = await gw_stack.gateway(ready=["tally"])
    client = gw_stack.client(gateway)
    replies = [await client.call("tally", "Limited", {"text": str(i)}) for i in range(4)]

    assert [r.code for r in replies[:2]] == [OK, OK]
    for refused in replies[2:]:
        assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.status is not None
        infos = [d for d in refused.status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert len(infos) == 1
        info = error_details_pb2.RetryInfo()
        infos[0].Unpack(info)
        assert 0 < info.retry_delay.ToTimedelta().total_seconds() <= 60
    # another caller has a budget of its own
    other = await client.call(
        "tally", "Limited", {"text": "x"}, token=gw_stack.token(subject="bob")
    )
    assert other.ok


# -- bad input: each gets a precise status; the gateway keeps serving -------------------------------


@pytest.fixture
async def probe_and_users(gw_stack: GatewayStack) -> AsyncIterator[tuple[Gateway, GatewayClient]]:
    """A probe worker (for a slow call in flight), a users worker, and a gateway in front."""
    await gw_stack.worker("probe", tree=PROBE_MODULES_DIR)
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["probe", "users"])
    yield gateway, gw_stack.client(gateway)


async def test_bad_input_gets_precise_statuses_while_a_call_in_flight_completes(
    gw_stack: GatewayStack, probe_and_users: tuple[Gateway, GatewayClient]
) -> None:
    _, client = probe_and_users
    token = gw_stack.token(*USERS_ROLES)
    auth = [("authorization", f"Bearer {token}")]
    in_flight = asyncio.create_task(
        client.call("probe", "Echo", {"text": "steady", "delay": 0.5}, token=token)
    )
    await asyncio.sleep(0.05)

    expired = gw_stack.token(*USERS_ROLES, now=time.time() - 3600, ttl=60)
    forged = gw_stack.token(*USERS_ROLES, secret="another-secret-of-at-least-32-bytes!")
    get_user = "/users.v1.UsersService/GetUser"
    cases: dict[str, tuple[grpc.StatusCode, str, asyncio.Future[Reply] | asyncio.Task[Reply]]] = {}

    def case(name: str, code: grpc.StatusCode, words: str, call: object) -> None:
        cases[name] = (code, words, asyncio.ensure_future(call))  # type: ignore[arg-type]

    INVALID, UNAUTH = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED
    # fmt: off
    case("malformed bytes", INVALID, "malformed protobuf", client.call_raw(get_user, b"\x0a\xff\xff", metadata=auth))
    case("truncated bytes", INVALID, "malformed protobuf", client.call_raw(get_user, b"\x0a\x05ab", metadata=auth))
    case("unknown method", grpc.StatusCode.UNIMPLEMENTED, "unknown method /users.v1.UsersService/DropUser", client.call_raw("/users.v1.UsersService/DropUser", b"", metadata=auth))
    case("unknown service", grpc.StatusCode.UNIMPLEMENTED, "unknown method /ghosts.v1.GhostsService/Haunt", client.call_raw("/ghosts.v1.GhostsService/Haunt", b""))
    case("forged token", UNAUTH, "signature", client.call("users", "GetUser", {"id": "x"}, token=forged))
    case("expired token", UNAUTH, "expired", client.call("users", "GetUser", {"id": "x"}, token=expired))
    case("garbage token", UNAUTH, "malformed token", client.call("users", "GetUser", {"id": "x"}, token="garbage"))
    case("bad api key", UNAUTH, "", client.call("users", "GetUser", {"id": "x"}, metadata=[("x-api-key", "nope")]))
    case("garbage version", INVALID, "'2025-13-45' is not understood", client.call("users", "GetUser", {"id": "x"}, version="2025-13-45", token=token))
    case("unknown label", grpc.StatusCode.NOT_FOUND, "no version label 'nightly'", client.call("users", "GetUser", {"id": "x"}, version="nightly", token=token))
    case("too old a date", grpc.StatusCode.NOT_FOUND, "its oldest is '2025-01-15'", client.call("users", "GetUser", {"id": "x"}, version="2020-01-01", token=token))
    case("invalid field", INVALID, "email", client.call("users", "CreateUser", {"given_name": "A", "family_name": "B", "email": "nope"}, token=token))
    # fmt: on

    for name, (code, words, future) in cases.items():
        reply = await future
        assert reply.code == code, f"{name}: {reply.code} {reply.details}"
        assert words.lower() in reply.details.lower(), f"{name}: {reply.details!r}"
        assert reply.request_id, f"{name}: no request id came back"

    steady = await in_flight
    assert steady.ok and steady.body is not None and steady.body["text"] == "steady"
    after = await client.call("users", "GetUser", {"id": "still-here"}, token=token)
    assert after.code == grpc.StatusCode.NOT_FOUND, "the gateway and worker keep serving"


async def test_an_oversized_request_is_resource_exhausted_and_the_next_call_is_served(
    gw_stack: GatewayStack,
) -> None:
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"], max_message_bytes=2048)
    client = gw_stack.client(gateway)
    token = gw_stack.token(*USERS_ROLES)

    big = await client.call("users", "GetUser", {"id": "x" * 10_000}, token=token)
    assert big.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2048" in big.details or "larger than max" in big.details

    small = await client.call("users", "GetUser", {"id": "small"}, token=token)
    assert small.code == grpc.StatusCode.NOT_FOUND


# -- workers that are down -------------------------------------------------------------------------


class CountingWorker:
    """A tiny gRPC server posing as a users worker that refuses every call with UNAVAILABLE.

    It stands in for a worker that accepts connections but cannot serve (shutting down,
    overloaded), so the test can count how many attempts the gateway made.
    """

    def __init__(self, tls_dir: Path) -> None:
        self.attempts: Counter[str] = Counter()
        self.server: grpc.aio.Server | None = None
        self.tls_dir = tls_dir

    def _method(self, name: str) -> grpc.RpcMethodHandler:
        async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
            self.attempts[name] += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "worker is draining")
            return b""

        return grpc.unary_unary_rpc_method_handler(refuse)

    async def start(self) -> str:
        server = grpc.aio.server()
        handlers = {name: self._method(name) for name in ("GetUser", "CreateUser")}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("users.v1.UsersService", handlers),)
        )
        port = serve_as(server, "users", self.tls_dir)  # the gateway talks only to a real "users"
        await server.start()
        self.server = server
        return f"127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)


async def test_a_stopped_worker_leaves_its_module_unavailable(gw_stack: GatewayStack) -> None:
    users = await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    client = gw_stack.client(gateway)
    token = gw_stack.token(*USERS_ROLES)
    await users.stop(0.5)
    await gateway.refresh()

    reply = await client.call("users", "GetUser", {"id": "x"}, token=token)
    assert reply.code == grpc.StatusCode.UNAVAILABLE
    assert "no healthy worker serves users" in reply.details


async def test_a_registered_worker_that_refuses_connections_is_unavailable(
    gw_stack: GatewayStack,
) -> None:
    users = await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    client = gw_stack.client(gateway)
    token = gw_stack.token(*USERS_ROLES)
    await users.stop(0.5)
    with socket.socket() as sock:  # a port that nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    await register(gw_stack.settings().store_url, worker_record("users-dead", dead))
    await gateway.refresh()
    assert gateway.table.modules["users"].served == ("2025-06-01",)

    reply = await client.call("users", "GetUser", {"id": "x"}, token=token)
    assert reply.code == grpc.StatusCode.UNAVAILABLE
    # It names the module and version, not the worker's internal address (that goes to the log).
    assert reply.details == (
        "no instance of users 2025-06-01 could be reached for /users.v1.UsersService/GetUser"
    )
    assert dead.rsplit(":", 1)[1] not in reply.details


async def test_idempotent_methods_are_retried_on_unavailable_and_others_are_not(
    gw_stack: GatewayStack, tls_dir: Path
) -> None:
    """GetUser is ``idempotent = true``: the gateway tries it 3 times; CreateUser only once."""
    users = await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    client = gw_stack.client(gateway)
    token = gw_stack.token(*USERS_ROLES)
    await users.stop(0.5)
    fake = CountingWorker(tls_dir)
    try:
        await register(
            gw_stack.settings().store_url, worker_record("users-draining", await fake.start())
        )
        await gateway.refresh()

        read = await client.call("users", "GetUser", {"id": "x"}, token=token)
        assert read.code == grpc.StatusCode.UNAVAILABLE
        assert fake.attempts["GetUser"] == 3

        write = await client.call(
            "users",
            "CreateUser",
            {"given_name": "A", "family_name": "B", "email": unique_email("a")},
            token=token,
        )
        assert write.code == grpc.StatusCode.UNAVAILABLE
        assert fake.attempts["CreateUser"] == 1
    finally:
        await fake.stop()


# -- transformers ----------------------------------------------------------------------------------


async def test_an_old_version_call_runs_the_transformers_both_ways(
    gw_stack: GatewayStack, gw_modules: dict[str, Path]
) -> None:
    await gw_stack.worker("relabel", tree=gw_modules["main"])
    gateway = await gw_stack.gateway(ready=["relabel"])
    client = gw_stack.client(gateway)

    old = await client.call("relabel", "Label", {"title": "Ledger"}, version="2025-01-15")
    assert old.ok and old.body == {"title": "Ledger"}
    new = await client.call("relabel", "Label", {"heading": "Ledger"})
    assert new.ok and new.body == {"heading": "Ledger"}


@pytest.mark.parametrize(
    ("title", "direction"), [("explode-forward", "forward"), ("explode-backward", "backward")]
)
async def test_a_failing_transformer_is_internal_with_the_hop_named_in_the_logs(
    gw_stack: GatewayStack,
    gw_modules: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
    title: str,
    direction: str,
) -> None:
    await gw_stack.worker("relabel", tree=gw_modules["main"])
    gateway = await gw_stack.gateway(ready=["relabel"])
    client = gw_stack.client(gateway)

    with caplog.at_level(logging.ERROR):
        failed = await client.call("relabel", "Label", {"title": title}, version="2025-01-15")
    assert failed.code == grpc.StatusCode.INTERNAL
    assert "refuses" not in failed.details, "the transformer's own text stays in the logs"
    assert failed.request_id in failed.details
    hop = f"relabel 2025-01-15 -> 2025-06-01 {direction} Label"
    logged = [r.getMessage() for r in caplog.records if r.name == "modrpc.versions"]
    assert any(hop in line and "refuses" in line for line in logged), logged

    fine = await client.call("relabel", "Label", {"title": "calm"}, version="2025-01-15")
    assert fine.ok and fine.body == {"title": "calm"}
