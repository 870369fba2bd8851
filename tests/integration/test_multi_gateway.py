"""Several gateways on shared PostgreSQL, NATS JetStream and Redis, all real, on 127.0.0.1.

Processes are started the way an operator would: ``modrpc worker`` and ``modrpc gateway`` with
the three backend URLs in the environment. The test then shows that a worker registered in the
store is routable through either gateway, that stopping one gateway loses no call a client
retries on the other, and that restarting everything on the same store restores the routes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from gen.users.v2025_01_15 import users_pb2 as old_pb2
from gen.users.v2025_01_15.client import UsersClient as OldUsersClient
from gen.users.v2025_06_01 import users_pb2
from gen.users.v2025_06_01.client import UsersClient
from runtime.config import DEV_JWT_SECRET
from runtime.gateway import issue_dev_token
from tests.services import free_port, require_nats, require_postgres, require_redis

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration



class Processes:
    """Started ``modrpc`` processes, each stopped with SIGTERM (then killed) at the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.running: list[subprocess.Popen[str]] = []

    def start(self, *args: str, ready: str, timeout: float = 30.0) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.running.append(proc)
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise AssertionError(f"modrpc {' '.join(args)} exited with {proc.returncode} before ready")
            if ready in line:
                return proc
        raise AssertionError(f"modrpc {' '.join(args)} not ready after {timeout}s")

    def stop(self, proc: subprocess.Popen[str]) -> int:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()

    def stop_all(self) -> None:
        for proc in reversed(self.running):
            if proc.poll() is None:
                self.stop(proc)
        self.running.clear()


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[dict[str, str]]:
    postgres = require_postgres()
    nats_url = require_nats()
    redis_url = require_redis()
    schema = f"modrpc_multigw_{uuid.uuid4().hex[:10]}"
    env = dict(
        os.environ,
        MODRPC_STORE_URL=f"{postgres}?schema={schema}",
        MODRPC_FABRIC_URL=nats_url,
        MODRPC_RATELIMIT_URL=redis_url,
        MODRPC_DATA_DIR=str(tmp_path / "data"),
        MODRPC_ADMIN_PORT="0",
        MODRPC_OBSERVABILITY__AUDIT_PATH=str(tmp_path / "audit.jsonl"),
        MODRPC_TLS__DIR=str(tmp_path / "tls"),
        MODRPC_LOG_LEVEL="WARNING",
    )
    try:
        yield env
    finally:
        async def drop() -> None:
            conn = await asyncpg.connect(postgres)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop())


def _token() -> list[tuple[str, str]]:
    token = issue_dev_token(
        DEV_JWT_SECRET, subject="ops", roles=["users:read", "users:write"], ttl_seconds=600,
        issuer="modrpc-dev", audience="modrpc",
    )  # fmt: skip
    return [("authorization", f"Bearer {token}")]


async def _get_user_anywhere(ports: list[int], user_id: str, attempts: int = 5) -> users_pb2.GetUserResponse:
    """What a client does: try a gateway, and on UNAVAILABLE move on to the next one."""
    last: grpc.aio.AioRpcError | None = None
    for i in range(attempts):
        port = ports[i % len(ports)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                return await UsersClient(channel, metadata=_token()).get_user(
                    users_pb2.GetUserRequest(id=user_id), timeout=5
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                last = exc
    assert last is not None
    raise last


def test_two_gateways_share_workers_survive_a_gateway_stop_and_restore_routes(backends: dict[str, str]) -> None:
    procs = Processes(backends)
    a, b = free_port(), free_port()
    try:
        procs.start("worker", "users", ready="modrpc-worker-ready users")
        gateway_a = procs.start("gateway", "--port", str(a), ready="ready")
        procs.start("gateway", "--port", str(b), ready="ready")

        async def scenario() -> str:
            # Created through gateway A at the old version, read through gateway B at stable.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{a}") as channel:
                created = await OldUsersClient(channel, metadata=_token()).create_user(
                    old_pb2.CreateUserRequest(name="Grace Hopper", email=f"g{uuid.uuid4().hex[:8]}@example.com"),
                    timeout=5,
                )
            assert created.name == "Grace Hopper"
            user = await _get_user_anywhere([b], created.id)
            assert (user.given_name, user.family_name) == ("Grace", "Hopper")

            # Stop gateway A while a client keeps calling; the client's retries reach B.
            done = 0
            for i in range(40):
                if i == 10:
                    assert procs.stop(gateway_a) == 0
                await _get_user_anywhere([a, b], created.id)
                done += 1
            assert done == 40
            return created.id

        user_id = asyncio.run(scenario())
        procs.stop_all()

        # Everything restarts on the same store: the routes come back.
        procs.start("worker", "users", ready="modrpc-worker-ready users")
        procs.start("gateway", "--port", str(b), ready="ready")
        user = asyncio.run(_get_user_anywhere([b], user_id))
        assert user.id == user_id
    finally:
        procs.stop_all()
