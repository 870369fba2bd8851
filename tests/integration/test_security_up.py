"""Zero-trust hops, tried as an attacker would, against ``modrpc up`` in a child process.

``modrpc up`` runs with no TLS configuration at all: it makes its development CA and every
certificate under the test's ``tls`` folder. Then, from this process (another process on the
same host, as an attacker's would be):

* straight to a worker's gRPC port and to its lane, without a certificate, with one from
  another CA, and with an expired one from the right CA: nothing is served;
* with a valid certificate that is not the gateway's (a developer's, another module's), a forged
  ``x-modrpc-principal`` is ignored, the call refused, and the refusal audited;
* straight to the event hub: no certificate, no connection; a module may use only the topics
  it declared, so nobody forges ``users.created`` or reads every new user's email;
* through the gateway everything works, and ``orders.PlaceOrder`` no longer hands a
  ``users:read``-protected email to a caller holding only ``orders:write``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest

from gen.orders.v2025_01_15 import orders_pb2
from gen.orders.v2025_01_15.client import OrdersClient
from gen.users.v2025_06_01 import users_pb2
from gen.users.v2025_06_01.client import UsersClient
from runtime.errors import PermissionDenied, Unavailable
from runtime.fabric._hub import HubFabric
from runtime.identity import Peer, Principal, principal_header
from runtime.lane import WHERE_METHOD, LaneClient, parse_where
from runtime.store import WorkerRecord
from runtime.tls import CertificateAuthority, InternalTls, KeyPair
from runtime.transport import CallError, TransportError
from tests.conftest import ROOT
from tests.fixtures.gateway_modules.commands import free_port, isolated_env, registered, token

FORGED = ("x-modrpc-principal", principal_header(Principal("root", ("users:read", "users:write", "admin"), "jwt")))


@dataclass
class Up:
    gateway: str
    tls: Path
    workers: dict[str, WorkerRecord]
    tmp: Path


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """``modrpc up`` with no TLS configuration, shared by this file's tests (one start-up)."""
    tmp = tmp_path_factory.mktemp("security-up")
    port = free_port()
    with (tmp / "up.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", "up", "--port", str(port)],
            cwd=ROOT, env=isolated_env(tmp), stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 90
        while "ready" not in (line := process.stdout.readline()):
            assert line or process.poll() is None, f"modrpc up exited: {(tmp / 'up.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "modrpc up not ready in 90s"
        workers = {w.module: w for w in asyncio.run(registered(tmp))}
        yield Up(f"127.0.0.1:{port}", tmp / "tls", workers, tmp)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()


def identity(up: Up, peer: Peer) -> InternalTls:
    """``peer``'s certificate from the deployment's (development) CA."""
    return InternalTls.load(up.tls, peer, dev_ca=True)


def foreign(up: Up, peer: Peer) -> InternalTls:
    """``peer``'s name, in a certificate from another CA (one the deployment never trusted)."""
    folder = up.tmp / "foreign"
    if not (folder / "ca.crt").exists():
        CertificateAuthority.create("someone else's CA").save(folder)
    return InternalTls.load(folder, peer, dev_ca=True)


def expired(up: Up, peer: Peer) -> InternalTls:
    """``peer``'s certificate from the right CA, expired yesterday."""
    folder = up.tmp / "expired"
    folder.mkdir(exist_ok=True)
    ca = CertificateAuthority.load(up.tls)
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    cert, key = ca.issue(peer, days=29, not_before=long_ago).save(folder)
    (folder / "ca.crt").write_bytes((up.tls / "ca.crt").read_bytes())
    return InternalTls(peer, KeyPair(cert, key, folder / "ca.crt"))


def channel(address: str, module: str, tls: InternalTls | None, *, present: bool = True) -> grpc.aio.Channel:
    """A channel to a worker of ``module``: plaintext (``tls`` None), TLS presenting no
    certificate (``present`` False), or mutual TLS as ``tls``."""
    if tls is None:
        return grpc.aio.insecure_channel(address)
    options = tls.channel_options(Peer.module(module))
    if not present:
        credentials = grpc.ssl_channel_credentials((tls.ca_file).read_bytes())
        return grpc.aio.secure_channel(address, credentials, options=options)
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=options)


def new_user() -> users_pb2.CreateUserRequest:
    return users_pb2.CreateUserRequest(
        given_name="Eve", family_name="Attacker", email=f"eve-{uuid.uuid4().hex[:10]}@example.com"
    )


async def create_user_fails(ch: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = (FORGED,)) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await UsersClient(ch).create_user(new_user(), metadata=metadata, timeout=5)
    return caught.value


async def audit_records(up: Up, outcome: str, subject: str, within: float = 10.0) -> list[dict[str, object]]:
    """Audit records (from the workers' shared audit file) of ``outcome`` by ``subject``."""
    path = up.tmp / "audit.jsonl"
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = []
        if path.exists():
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if record["outcome"] == outcome and record["principal"]["subject"] == subject:
                    found.append(record)
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)


# -- the worker's gRPC port --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["plaintext", "no certificate", "another CA", "expired"])
async def test_a_worker_grpc_port_serves_nobody_without_a_valid_certificate(up: Up, how: str) -> None:
    users = up.workers["users"].address
    tls = {
        "plaintext": None,
        "no certificate": identity(up, Peer.gateway()),
        "another CA": foreign(up, Peer.gateway()),
        "expired": expired(up, Peer.gateway()),
    }[how]
    async with channel(users, "users", tls, present=how != "no certificate") as ch:
        error = await create_user_fails(ch)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()  # refused at the handshake


async def test_the_gateways_own_certificate_is_what_gets_in(up: Up) -> None:
    """The positive control: the same call, with the gateway's certificate, is served."""
    async with channel(up.workers["users"].address, "users", identity(up, Peer.gateway())) as ch:
        user = await UsersClient(ch).create_user(new_user(), metadata=(FORGED,), timeout=5)
    assert user.given_name == "Eve"


async def test_a_forged_principal_from_a_developer_certificate_is_ignored_refused_and_audited(up: Up) -> None:
    async with channel(up.workers["users"].address, "users", identity(up, Peer.client("developer"))) as ch:
        error = await create_user_fails(ch)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "missing role 'users:write'"  # "root" and its roles were not believed
    (record, *_) = await audit_records(up, "PERMISSION_DENIED", "client:developer")
    assert record["method"] == "/users.v1.UsersService/CreateUser"
    assert [e["kind"] for e in record["events"]] == ["refused"]  # type: ignore[index,union-attr]


async def test_a_module_that_did_not_declare_users_cannot_call_it_whatever_it_claims(up: Up) -> None:
    async with channel(up.workers["users"].address, "users", identity(up, Peer.module("inventory"))) as ch:
        error = await create_user_fails(ch)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "module 'inventory' did not declare capability modules=['users']" in (error.details() or "")


async def test_grpcurl_style_reflection_works_with_the_developer_certificate(up: Up) -> None:
    """How a developer still reaches a worker directly: the dev CA's client certificate."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with channel(up.workers["users"].address, "users", identity(up, Peer.client("developer"))) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# -- the worker's lane -------------------------------------------------------------------------------


async def lane_address(up: Up, module: str) -> str:
    worker = up.workers[module].address
    async with channel(worker, module, identity(up, Peer.gateway())) as ch:
        answer = await ch.unary_unary(WHERE_METHOD)(b"", timeout=5)
    named = parse_where(answer)
    assert named is not None
    return named


@pytest.mark.parametrize("how", ["plaintext", "no certificate", "another CA", "expired"])
async def test_a_worker_lane_serves_nobody_without_a_valid_certificate(up: Up, how: str) -> None:
    address = await lane_address(up, "users")
    host, _, port = address.rpartition(":")
    if how == "plaintext":
        # A well-formed lane REQUEST frame in the clear: the worker reads it as a TLS record,
        # fails the handshake, and closes, answering nothing.
        from runtime.lane._frames import encode_request

        reader, writer = await asyncio.open_connection(host, int(port))
        payload = new_user().SerializeToString()
        writer.write(encode_request(1, "/users.v1.UsersService/CreateUser", [FORGED], 5.0, payload))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 15)
        writer.close()
        assert answer == b"" or answer[:1] == b"\x15", answer  # closed, at most with a TLS alert
        return
    tls = {
        "no certificate": None,
        "another CA": foreign(up, Peer.gateway()),
        "expired": expired(up, Peer.gateway()),
    }[how]
    if tls is None:
        context = ssl.create_default_context(cafile=str(up.tls / "ca.crt"))
        context.check_hostname = False
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
            writer.write(b"\x00" * 9)
            await writer.drain()
            await asyncio.wait_for(reader.readexactly(1), 15)  # TLS 1.3: the refusal comes after
        return
    lane = LaneClient(address, tls=tls, server=Peer.module("users"))
    try:
        with pytest.raises(TransportError):
            await lane.unary("/users.v1.UsersService/CreateUser", new_user().SerializeToString(), [FORGED], None)
    finally:
        await lane.close()


async def test_the_lane_believes_a_principal_only_from_the_gateway(up: Up) -> None:
    address = await lane_address(up, "users")
    payload = new_user().SerializeToString()
    developer = LaneClient(address, tls=identity(up, Peer.client("developer")), server=Peer.module("users"))
    gateway = LaneClient(address, tls=identity(up, Peer.gateway()), server=Peer.module("users"))
    try:
        with pytest.raises(CallError) as caught:
            await developer.unary("/users.v1.UsersService/CreateUser", payload, [FORGED], None)
        assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
        body, _ = await gateway.unary("/users.v1.UsersService/CreateUser", payload, [FORGED], None)
        assert users_pb2.CreateUserResponse.FromString(body).given_name == "Eve"
    finally:
        await developer.close()
        await gateway.close()


# -- the event hub -----------------------------------------------------------------------------------


def hub_url(up: Up) -> str:
    """Where ``modrpc up`` serves its hub: what it handed its workers in their environment."""
    environment = Path(f"/proc/{up.workers['notifications'].pid}/environ").read_bytes().split(b"\0")
    (url,) = [v.split(b"=", 1)[1].decode() for v in environment if v.startswith(b"MODRPC_FABRIC_URL=")]
    assert url.startswith("hub://")
    return url


async def test_the_hub_takes_no_connection_without_a_certificate(up: Up) -> None:
    async with grpc.aio.insecure_channel(hub_url(up).removeprefix("hub://")) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ch.unary_unary("/modrpc.fabric.v1.Hub/Publish")(b"\0\0\0\2{}", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    for tls in (foreign(up, Peer.module("users")), expired(up, Peer.module("users"))):
        hub = HubFabric(hub_url(up), tls=tls)
        with pytest.raises(Unavailable):
            await hub.start()
        await hub.close()


@pytest.mark.parametrize(
    ("peer", "action", "refusal"),
    [
        (Peer.module("notifications"), "publish", "did not declare capability publish=['users.created']"),
        (Peer.module("inventory"), "subscribe", "did not declare capability subscribe=['users.created']"),
        (Peer.client("developer"), "publish", "client:developer may not use the fabric hub"),
        (Peer.client("developer"), "subscribe", "client:developer may not use the fabric hub"),
    ],
)
async def test_the_hub_lets_a_module_use_only_the_topics_it_declared(
    up: Up, peer: Peer, action: str, refusal: str
) -> None:
    hub = HubFabric(hub_url(up), tls=identity(up, peer))
    await hub.start()
    try:
        with pytest.raises(PermissionDenied, match=refusal.replace("[", r"\[").replace("]", r"\]")):
            if action == "publish":
                await hub.publish("users.created", b'{"id": "forged", "email": "x@example.com"}', timeout=5)
            else:

                async def handle(message: object) -> None:
                    raise AssertionError(f"a refused subscriber got {message!r}")

                await hub.subscribe("users.created", handle)
    finally:
        await hub.close()


# -- through the gateway -----------------------------------------------------------------------------


async def test_through_the_gateway_place_order_needs_the_callers_users_read(up: Up) -> None:
    async with grpc.aio.insecure_channel(up.gateway) as ch:
        writer = (("authorization", f"Bearer {token('users:write')}"),)
        user = await UsersClient(ch).create_user(new_user(), metadata=writer, timeout=10)
        order = orders_pb2.PlaceOrderRequest(user_id=user.id, items=[orders_pb2.OrderItem(sku="WIDGET-1", quantity=1)])

        only_orders = (("authorization", f"Bearer {token('orders:write')}"),)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await OrdersClient(ch).place_order(order, metadata=only_orders, timeout=10)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "missing role 'users:read'" in (caught.value.details() or "")
        assert user.email not in (caught.value.details() or "")

        both = (("authorization", f"Bearer {token('orders:write', 'users:read')}"),)
        placed = await OrdersClient(ch).place_order(order, metadata=both, timeout=10)
        assert placed.email == user.email and placed.user_id == user.id
