"""``modrpc up`` as a user runs it: the real command in a child process, driven with grpcurl.

It runs on the example modules with all its state in the test's tmp folder and the gateway on
a free port (see ``tests/fixtures/gateway_modules/commands.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.manifest import discover_modules
from tests.fixtures.gateway_modules.commands import (
    Command,
    free_port,
    grpcurl,
    registered,
    running,
    start,
    stop,
    token,
)

EXAMPLES = tuple(p.name for p in discover_modules(Path(__file__).resolve().parents[2] / "modules"))
"""Whatever modules the example project has: adding one must not break this test."""


@pytest.fixture
async def up(tmp_path: Path) -> AsyncIterator[tuple[Command, str]]:
    """``modrpc up --port <free>`` once it printed its ready line; its gateway address."""
    port = free_port()
    command = await start(tmp_path, "up", "--port", str(port))
    try:
        ready = await command.line_with("ready", within=60)
        assert f"127.0.0.1:{port}" in ready
        yield command, f"127.0.0.1:{port}"
    finally:
        if command.process.returncode is None:
            with contextlib.suppress(Exception):
                await stop(command)


async def test_up_prints_each_worker_then_ready_and_serves_through_one_port(
    up: tuple[Command, str], tmp_path: Path
) -> None:
    command, address = up
    printed = sorted(tuple(line.split()) for line in command.lines[:-1] if line.split()[0] in EXAMPLES)
    # Every example module runs its warm pool of two workers.
    assert [module for module, _ in printed] == [m for m in EXAMPLES for _ in range(2)]
    workers = await registered(tmp_path)
    assert sorted((w.module, w.address) for w in workers) == printed

    auth = f"authorization: Bearer {token('users:read', 'users:write')}"
    email = f"grace-{uuid.uuid4().hex[:10]}@example.com"
    code, out, err = await grpcurl(
        "-H", auth, "-H", "x-api-version: 2025-01-15", "-d", json.dumps({"name": "Grace Hopper", "email": email}),
        address, "users.v1.UsersService/CreateUser",
    )  # fmt: skip
    assert code == 0, err
    created = json.loads(out)
    code, out, err = await grpcurl(
        "-H",
        auth,
        "-d",
        json.dumps({"id": created["id"]}),
        address,
        "users.v1.UsersService/GetUser",
    )
    assert code == 0, err
    assert (json.loads(out)["given_name"], json.loads(out)["family_name"]) == ("Grace", "Hopper")

    assert await stop(command) == 0
    assert command.process.returncode == 0
    alive = [w for w in workers if running(w.pid)]
    assert alive == [], f"workers outlived modrpc up: {alive}"
    assert await registered(tmp_path) == [], "workers deregister as they stop"


async def test_up_holds_a_2025_01_15_caller_to_its_own_contract(up: tuple[Command, str]) -> None:
    """SPEC §4 through the processes ``make up`` starts: violations name the old version's own
    fields, its own limits apply, and reflection at a version no module has is NOT_FOUND."""
    _, address = up
    old = ("-H", f"authorization: Bearer {token('users:read', 'users:write')}", "-H", "x-api-version: 2025-01-15")
    create = (address, "users.v1.UsersService/CreateUser")
    code, _, err = await grpcurl(*old, "-d", json.dumps({"name": "", "email": "x"}), *create)
    assert code != 0 and "Code: InvalidArgument" in err, err
    assert re.findall(r'"field":\s*"([^"]+)"', err) == ["name", "email"], err
    email = f"ada-{uuid.uuid4().hex[:10]}@example.com"
    code, _, err = await grpcurl(*old, "-d", json.dumps({"name": "x" * 301, "email": email}), *create)
    assert code != 0 and "Code: InvalidArgument" in err, err
    assert re.findall(r'"field":\s*"([^"]+)"', err) == ["name"], err
    describe = (address, "describe", "users.v1.CreateUserRequest")
    code, out, err = await grpcurl("-H", "x-api-version: 2025-01-15", *describe)
    assert code == 0 and "max_len:200" in out, err  # the symbol is there at a real version
    code, _, err = await grpcurl("-H", "x-api-version: bogus-label", *describe)
    assert code != 0 and "Symbol not found" in err, err


async def test_a_crashed_worker_is_restarted_logged_and_serves_again(
    up: tuple[Command, str], tmp_path: Path
) -> None:
    command, address = up
    users, other = [w for w in await registered(tmp_path) if w.module == "users"]
    os.kill(users.pid, signal.SIGKILL)

    line = await command.line_with("users restarted on", within=30)
    new_address = line.split()[-1]
    assert new_address != users.address
    log = command.log.read_text()
    assert "worker users exited with code -9; restarting" in log
    assert f"worker users restarted on {new_address}" in log

    auth = f"authorization: Bearer {token('users:read', 'users:write')}"
    for attempt in range(4):  # not idempotent: each one reaches a live worker or was never sent
        email = f"after-crash-{attempt}-{uuid.uuid4().hex[:8]}@example.com"
        body = json.dumps({"given_name": "Ada", "family_name": "Lovelace", "email": email})
        code, out, err = await grpcurl(
            "-H", auth, "-d", body, address, "users.v1.UsersService/CreateUser"
        )
        assert code == 0, f"call {attempt} after the restart: {err}"
        assert json.loads(out)["email"] == email

    now = [w for w in await registered(tmp_path) if w.module == "users"]
    assert sorted(w.address for w in now) == sorted([other.address, new_address]), (
        "the dead worker's registration is gone"
    )
    all_workers = await registered(tmp_path)
    assert await stop(command) == 0
    assert not running(users.pid)
    assert [w for w in all_workers if running(w.pid)] == []


def modules_with_a_stub(tmp_path: Path) -> Path:
    """A copy of the users module whose 2025-06-01 transformer is the stub gen wrote."""
    import shutil

    from runtime.codegen._transformers import render_transformer_stub
    from runtime.versions import VersionHistory

    repo = Path(__file__).resolve().parents[2]
    modules = tmp_path / "project-modules"
    shutil.copytree(repo / "modules" / "users", modules / "users", ignore=shutil.ignore_patterns("__pycache__"))
    records = VersionHistory.load("users", modules / "users" / "versions").records
    (modules / "users" / "transformers" / "v2025_06_01.py").write_text(render_transformer_stub("users", *records))
    return modules


async def test_files_left_readable_by_others_are_made_private_at_the_next_start(tmp_path: Path) -> None:
    """Every file and folder the runtime keeps (keys, the store's spools, module databases,
    locks) is 0600 and 0700; what was widened by hand, or by an older version, while modrpc was
    stopped is narrowed at its next start, before anything reads it."""
    port = free_port()
    owned = (tmp_path / "data", tmp_path / "tls")

    def loose() -> list[str]:
        return [
            f"{path.relative_to(tmp_path)} {stat.S_IMODE(path.lstat().st_mode):o}"
            for folder in owned for path in (folder, *folder.rglob("*"))
            if stat.S_IMODE(path.lstat().st_mode) & 0o077
        ]  # fmt: skip

    for attempt in range(2):
        command = await start(tmp_path, "up", "--port", str(port))
        try:
            await command.line_with("ready", within=60)
            assert loose() == [], f"start {attempt + 1}"
        finally:
            await stop(command)
        if attempt == 0:
            for folder in owned:
                for path in (folder, *folder.rglob("*")):
                    path.chmod(0o755 if path.is_dir() else 0o644)
            assert any(p.endswith(".key 644") for p in loose())
    log = (tmp_path / "up.log").read_text()
    assert "took group and other permissions off" in log


async def test_up_refuses_an_unfilled_transformer_stub_naming_the_file(tmp_path: Path) -> None:
    """SPEC §4: a stub nobody filled in stops `modrpc up` before any worker starts."""
    modules = modules_with_a_stub(tmp_path)
    command = await start(tmp_path, "up", "--port", str(free_port()), "--modules", str(modules))
    code = await asyncio.wait_for(command.process.wait(), 60)

    assert code != 0
    assert command.process.stdout is not None
    printed = (await command.process.stdout.read()).decode()
    assert "ready" not in printed
    log = command.log.read_text()
    assert "v2025_06_01.py: forward_create_user_request is still the generated stub" in log
    assert "backward_get_user_response is still the generated stub" in log
