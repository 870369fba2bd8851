"""``modrpc gateway`` alone: a child process that finds workers through the manifest store.

The workers run in this process (port 0) on the test's SQLite store; the gateway command runs
as a child with the same ``MODRPC_STORE_URL`` and knows them only through it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from runtime.config import Settings
from tests.fixtures.gateway_modules.commands import (
    Command,
    free_port,
    grpcurl,
    isolated_env,
    start,
    stop,
    token,
)
from tests.fixtures.gateway_modules.stack import GatewayStack


@pytest.fixture
def gateway_env(gw_settings: Callable[..., Settings], tmp_path: Path) -> Path:
    """Point ``isolated_env`` at the store the in-process workers use (``worker_settings``)."""
    store_url = gw_settings().store_url
    assert store_url == f"sqlite:///{tmp_path}/store.db"
    assert isolated_env(tmp_path)["MODRPC_STORE_URL"] == store_url
    return tmp_path


@pytest.fixture
async def gateway_command(gateway_env: Path, tls_dir: Path) -> AsyncIterator[tuple[Command, str]]:
    port = free_port()
    # the in-process workers' CA: the gateway proves itself to them with a certificate from it
    command = await start(gateway_env, "gateway", "--port", str(port), env={"MODRPC_TLS__DIR": str(tls_dir)})
    try:
        await command.line_with("gateway listening on", within=30)
        yield command, f"127.0.0.1:{port}"
    finally:
        if command.process.returncode is None:
            await stop(command)


async def create_and_read(address: str) -> None:
    auth = f"authorization: Bearer {token('users:read', 'users:write')}"
    email = f"cli-{uuid.uuid4().hex[:10]}@example.com"
    body = json.dumps({"name": "Ada Lovelace", "email": email})
    code, out, err = await grpcurl(
        "-H",
        auth,
        "-H",
        "x-api-version: 2025-01-15",
        "-d",
        body,
        address,
        "users.v1.UsersService/CreateUser",
    )
    assert code == 0, err
    user = json.loads(out)
    assert user["name"] == "Ada Lovelace"
    code, out, err = await grpcurl(
        "-H", auth, "-d", json.dumps({"id": user["id"]}), address, "users.v1.UsersService/GetUser"
    )
    assert code == 0, err
    assert json.loads(out)["given_name"] == "Ada"


async def test_the_gateway_alone_finds_running_workers_through_the_store(
    gw_stack: GatewayStack, gateway_env: Path, tls_dir: Path
) -> None:
    await gw_stack.worker("users")
    await gw_stack.worker("inventory")
    port = free_port()
    command = await start(gateway_env, "gateway", "--port", str(port), env={"MODRPC_TLS__DIR": str(tls_dir)})
    try:
        await command.line_with(f"ready: gateway on 127.0.0.1:{port}", within=30)
        address = f"127.0.0.1:{port}"
        code, out, err = await grpcurl(address, "list")
        assert code == 0, err
        assert (
            "users.v1.UsersService" in out.split()
            and "inventory.v1.InventoryService" in out.split()
        )
        await create_and_read(address)
    finally:
        assert await stop(command) == 0


async def test_workers_that_start_after_the_gateway_are_found_too(
    gw_stack: GatewayStack, gateway_command: tuple[Command, str]
) -> None:
    command, address = gateway_command
    await gw_stack.worker("users")
    await command.line_with("ready: gateway on", within=30)
    await create_and_read(address)
    assert await stop(command) == 0
