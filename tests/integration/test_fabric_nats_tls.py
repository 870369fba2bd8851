"""The NATS fabric over mutual TLS (``tls://``), against a private nats-server that requires
client certificates from the deployment CA (``tls { verify: true }``).

A runtime process reaches it with its deployment identity and checks the server's certificate
against the deployment CA; a process without that identity, or with a certificate from another
CA, is refused at the handshake, so nobody else can publish or read the runtime's events.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.errors import Unavailable
from runtime.fabric import Message, open_fabric
from runtime.fabric._nats import NatsFabric
from runtime.fabric._types import NatsOptions
from runtime.identity import Peer
from runtime.tls import CertificateAuthority, InternalTls
from tests.fixtures.listening import wait_listening
from tests.services import free_port, in_ci


def _nats_server() -> str:
    binary = shutil.which("nats-server") or shutil.which("/usr/sbin/nats-server")
    if binary is None:
        message = "nats-server is not installed; needed for a private TLS server"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _deployment(folder: Path, ca: CertificateAuthority, peer: Peer) -> InternalTls:
    """``peer``'s identity from ``ca`` in ``folder``, as ``modrpc certs issue`` writes it."""
    ca.issue(peer).save(folder)
    return InternalTls.load(folder, peer, dev_ca=False)


@pytest.fixture
async def nats_tls(tmp_path: Path) -> AsyncIterator[tuple[str, CertificateAuthority]]:
    """A private nats-server on a free port requiring client certificates from a new CA."""
    binary = _nats_server()
    ca = CertificateAuthority.create("test deployment CA")
    server_dir = tmp_path / "server"
    cert, key = ca.issue(Peer.hub(), hosts=["127.0.0.1"]).save(server_dir)
    port = free_port()
    config = tmp_path / "nats.conf"
    config.write_text(
        f'listen: "127.0.0.1:{port}"\n'
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        f'tls {{ cert_file: "{cert}", key_file: "{key}", ca_file: "{server_dir / "ca.crt"}", verify: true, timeout: 2 }}\n'
    )
    process = await asyncio.create_subprocess_exec(
        binary, "-c", str(config), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_listening(port)
        yield f"tls://127.0.0.1:{port}", ca
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def test_a_runtime_identity_publishes_and_consumes_over_mutual_tls(
    nats_tls: tuple[str, CertificateAuthority], tmp_path: Path
) -> None:
    url, ca = nats_tls
    tls = _deployment(tmp_path / "users", ca, Peer.module("users"))
    received: list[bytes] = []
    got = asyncio.Event()

    async def record(message: Message) -> None:
        received.append(message.data)
        got.set()

    async with open_fabric(url, tls=tls, prefix="tlstest", connect_timeout=3.0) as fabric:
        await fabric.subscribe("users.created", record, group="welcome")
        await fabric.publish("users.created", b"grace")
        async with asyncio.timeout(10):
            await got.wait()
    assert received == [b"grace"]


async def test_no_identity_or_another_cas_is_refused_at_the_handshake(
    nats_tls: tuple[str, CertificateAuthority], tmp_path: Path
) -> None:
    url, ca = nats_tls
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.certificate_pem)
    no_certificate = ssl.create_default_context(cafile=str(ca_file))  # trusts the server, says nothing
    # Trusts the server too, but holds a certificate another CA issued.
    stranger_dir = tmp_path / "stranger"
    stranger_dir.mkdir()
    (stranger_dir / "ca.crt").write_bytes(ca.certificate_pem)
    stranger = _deployment(stranger_dir, CertificateAuthority.create("another CA"), Peer.module("users"))
    attempts: list[NatsFabric] = [
        NatsFabric(url, NatsOptions(prefix="tlstest", connect_timeout=2.0)),  # no TLS of its own
        NatsFabric(url, NatsOptions(prefix="tlstest", connect_timeout=2.0), tls=no_certificate),
        NatsFabric(url, NatsOptions(prefix="tlstest", connect_timeout=2.0), tls=stranger.client_context()),
    ]
    for fabric in attempts:
        with pytest.raises(Unavailable) as refused:
            await fabric.start()
        await fabric.close()
        assert f"NATS JetStream at {url} is unavailable" in str(refused.value)
