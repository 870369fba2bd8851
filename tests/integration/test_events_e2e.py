"""``users.CreateUser`` publishes ``users.created``; the ``notifications`` worker consumes it.

Run through the real ``modrpc up`` — separate worker processes — on the embedded defaults (the
supervisor's in-memory fabric, shared through its hub) and on NATS JetStream.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

from gen.notifications.v2025_01_15 import notifications_pb2
from gen.notifications.v2025_01_15.client import NotificationsClient
from gen.users.v2025_06_01 import users_pb2
from gen.users.v2025_06_01.client import UsersClient
from runtime.config import DEV_JWT_SECRET
from runtime.gateway import issue_dev_token
from tests.services import free_port, require_nats

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration



def _metadata() -> list[tuple[str, str]]:
    token = issue_dev_token(
        DEV_JWT_SECRET, subject="e2e", roles=["users:write", "notifications:read"], ttl_seconds=600,
        issuer="modrpc-dev", audience="modrpc",
    )  # fmt: skip
    return [("authorization", f"Bearer {token}")]


@pytest.mark.parametrize("fabric", ["embedded", "nats"])
def test_a_created_user_is_welcomed_by_the_notifications_worker(fabric: str, tmp_path: Path) -> None:
    port = free_port()
    env = dict(
        os.environ,
        MODRPC_STORE_URL=f"sqlite:///{tmp_path}/store.db",
        MODRPC_DATA_DIR=str(tmp_path / "data"),
        MODRPC_ADMIN_PORT="0",
        MODRPC_OBSERVABILITY__AUDIT_PATH=str(tmp_path / "audit.jsonl"),
        MODRPC_TLS__DIR=str(tmp_path / "tls"),
        MODRPC_LOG_LEVEL="WARNING",
    )
    if fabric == "nats":
        env["MODRPC_FABRIC_URL"] = require_nats()
    up = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "up", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert up.stdout is not None
        deadline = time.monotonic() + 60
        while "ready" not in (line := up.stdout.readline()):
            assert line or up.poll() is None, f"modrpc up exited with {up.returncode}"
            assert time.monotonic() < deadline, "modrpc up not ready in 60s"

        async def scenario() -> None:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                email = f"welcome-{uuid.uuid4().hex[:8]}@example.com"
                user = await UsersClient(channel, metadata=_metadata()).create_user(
                    users_pb2.CreateUserRequest(given_name="Katherine", family_name="Johnson", email=email),
                    timeout=5,
                )
                notifications = NotificationsClient(channel, metadata=_metadata())
                for _ in range(100):  # delivery is asynchronous: poll, bounded
                    found = await notifications.list_notifications(
                        notifications_pb2.ListNotificationsRequest(user_id=user.id), timeout=5
                    )
                    if found.items:
                        break
                    await asyncio.sleep(0.05)
                assert [n.email for n in found.items] == [email]
                assert found.items[0].message == "Welcome, Katherine!"

        asyncio.run(scenario())
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            assert up.wait(timeout=30) == 0
        finally:
            if up.poll() is None:
                up.kill()
