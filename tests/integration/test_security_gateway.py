"""The gateway's side of zero trust, with real gateways and workers on 127.0.0.1.

No development secret beyond loopback or beside real keys; credentials that are unambiguous and
bounded; errors that never name an internal address; an edge whose certificate files are read
again when they change.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from runtime.config import DEV_JWT_SECRET, ConfigError
from runtime.gateway import Gateway, hash_api_key, issue_dev_token
from runtime.identity import Peer
from runtime.tls import CertificateAuthority
from tests.conftest import PROBE_MODULES_DIR
from tests.fixtures.gateway_modules.stack import GatewayStack

USERS_READ = ("users:read",)


def dev_token(*roles: str, subject: str = "ada", ttl: float = 300, secret: str = DEV_JWT_SECRET) -> str:
    return issue_dev_token(
        secret, subject=subject, roles=list(roles), ttl_seconds=ttl, issuer="modrpc-dev", audience="modrpc"
    )


async def test_a_gateway_beyond_loopback_with_the_development_secret_does_not_start(
    gw_settings: Any,
) -> None:
    gateway = Gateway(gw_settings(), host="0.0.0.0", port=0)
    with pytest.raises(ConfigError, match="MODRPC_AUTH__JWT_SECRET"):
        await gateway.start()  # refused before anything binds
    assert gateway.address == ""
    await gateway.stop(0)


async def test_an_es256_only_gateway_refuses_the_development_token_and_takes_its_own(
    gw_stack: GatewayStack, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / "es256.pem"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"], auth={"jwt_public_keys": [public]})
    client = gw_stack.client(gateway)
    refused = await client.call("users", "GetUser", {"id": "x"}, token=dev_token(*USERS_READ))
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED
    assert refused.details == "no key configured for token algorithm 'HS256'"
    now = int(time.time())
    claims = {"sub": "ada", "roles": list(USERS_READ), "iss": "modrpc-dev", "aud": "modrpc",
              "iat": now, "nbf": now, "exp": now + 60}  # fmt: skip
    own = jwt.encode(claims, key, algorithm="ES256")
    served = await client.call("users", "GetUser", {"id": "x"}, token=own)
    assert served.code == grpc.StatusCode.NOT_FOUND  # authenticated, authorized, and answered


async def test_two_credentials_that_disagree_or_repeat_are_refused(gw_stack: GatewayStack) -> None:
    await gw_stack.worker("users")
    keys = {"ops": {"hash": hash_api_key("ops-key"), "subject": "ops", "roles": ["users:read"]}}
    gateway = await gw_stack.gateway(ready=["users"], auth={"api_keys": keys})
    client = gw_stack.client(gateway)
    ada, mallory = dev_token(*USERS_READ, subject="ada"), dev_token("users:read", "admin", subject="mallory")

    twice = await client.call(
        "users", "GetUser", {"id": "x"},
        metadata=[("authorization", f"Bearer {ada}"), ("authorization", f"Bearer {mallory}")],
    )  # fmt: skip
    assert twice.code == grpc.StatusCode.UNAUTHENTICATED
    assert twice.details == "more than one 'authorization' header: send exactly one credential"

    both = await client.call("users", "GetUser", {"id": "x"}, token=ada, metadata=[("x-api-key", "ops-key")])
    assert both.code == grpc.StatusCode.UNAUTHENTICATED and "name different callers" in both.details

    cached = await client.call("users", "GetUser", {"id": "x"}, token=ada)  # the token alone is fine,
    assert cached.code == grpc.StatusCode.NOT_FOUND
    again = await client.call("users", "GetUser", {"id": "x"}, token=ada, metadata=[("x-api-key", "ops-key")])
    assert again.code == grpc.StatusCode.UNAUTHENTICATED  # and remembering it skips no check


async def test_a_token_living_past_the_maximum_is_refused(gw_stack: GatewayStack) -> None:
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"], auth={"max_token_lifetime": 600})
    client = gw_stack.client(gateway)
    forever = await client.call("users", "GetUser", {"id": "x"}, token=dev_token(*USERS_READ, ttl=10 * 365 * 86400))
    assert forever.code == grpc.StatusCode.UNAUTHENTICATED
    assert "exceeds the gateway's maximum of 600s (auth.max_token_lifetime)" in forever.details
    short = await client.call("users", "GetUser", {"id": "x"}, token=dev_token(*USERS_READ, ttl=300))
    assert short.code == grpc.StatusCode.NOT_FOUND


async def test_a_deadline_passing_over_the_lane_does_not_name_the_worker(gw_stack: GatewayStack) -> None:
    worker = await gw_stack.worker("probe", tree=PROBE_MODULES_DIR)
    gateway = await gw_stack.gateway(ready=["probe"])
    client = gw_stack.client(gateway)
    for _ in range(20):  # the lane is found in the background: wait until calls take it
        await client.call("probe", "Echo", {"text": "warm"}, token=dev_token())
        if worker.lane_address and worker._lane is not None and worker._lane.connections:
            break
        await asyncio.sleep(0.05)
    reply = await client.call("probe", "Stall", {"seconds": 5}, token=dev_token(), timeout=0.4)
    assert reply.code == grpc.StatusCode.DEADLINE_EXCEEDED, reply
    for address in (worker.address, worker.lane_address):
        host, _, port = address.rpartition(":")
        assert port not in reply.details and host not in reply.details, reply.details


def serial_of_edge(address: str, ca: Path) -> int:
    """The serial number of the certificate the edge presents to a new connection."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    host, _, port = address.rpartition(":")
    import socket

    with socket.create_connection((host, int(port)), timeout=5) as raw, context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_the_edge_certificate_is_read_again_when_its_files_change(
    gw_stack: GatewayStack, tmp_path: Path
) -> None:
    ca = CertificateAuthority.create("edge CA")
    ca.save(tmp_path)
    first = ca.issue(Peer.gateway(), hosts=["127.0.0.1"])
    cert, key = first.save(tmp_path / "edge")
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"], tls={"cert": cert, "key": key})
    before = await asyncio.to_thread(serial_of_edge, gateway.address, tmp_path / "ca.crt")
    assert before == x509.load_pem_x509_certificate(first.certificate).serial_number

    second = ca.issue(Peer.gateway(), hosts=["127.0.0.1"], not_before=datetime.datetime.now(datetime.UTC))
    second.save(tmp_path / "edge")  # replaced in place, key first: as a renewal job would
    after = await asyncio.to_thread(serial_of_edge, gateway.address, tmp_path / "ca.crt")
    assert after == x509.load_pem_x509_certificate(second.certificate).serial_number != before
