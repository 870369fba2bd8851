"""Two gateway processes share one rate limit through the real Redis on 127.0.0.1:6379.

``limited.Ping`` allows 4 calls a minute per caller. Calls alternate between the gateways; the
fifth is refused with RESOURCE_EXHAUSTED and ``google.rpc.RetryInfo``, whichever gateway takes
it, and the refusal shows in the gateway's Prometheus ``/metrics``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runtime.config import DEV_JWT_SECRET
from runtime.gateway import issue_dev_token
from runtime.versions import VersionCatalog
from tests.services import free_port, require_redis

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "tests" / "fixtures" / "limited_modules"
pytestmark = pytest.mark.integration



def _start(args: list[str], env: dict[str, str], ready: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while ready not in (line := proc.stdout.readline()):
        assert line or proc.poll() is None, f"{args} exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"{args} not ready in 30s"
    return proc


def test_two_gateways_enforce_one_limit_through_redis(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        MODRPC_STORE_URL=f"sqlite:///{tmp_path}/store.db",
        MODRPC_RATELIMIT_URL=require_redis(),
        MODRPC_DATA_DIR=str(tmp_path / "data"),
        MODRPC_OBSERVABILITY__AUDIT_PATH=str(tmp_path / "audit.jsonl"),
        MODRPC_TLS__DIR=str(tmp_path / "tls"),
        MODRPC_LOG_LEVEL="WARNING",
        MODRPC_ADMIN_PORT="0",
    )
    ports = [free_port(), free_port()]
    admin = free_port()
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(_start(["worker", "limited", "--modules", str(MODULES)], env, "modrpc-worker-ready"))
        for i, port in enumerate(ports):
            gw_env = dict(env, MODRPC_ADMIN_PORT=str(admin)) if i == 0 else env
            procs.append(_start(["gateway", "--port", str(port)], gw_env, "ready"))

        wire = VersionCatalog.from_module_dir("limited", MODULES / "limited", {}).wire("2025-01-15")
        # A fresh subject per run: the limit is per caller, and Redis outlives test runs.
        token = issue_dev_token(
            DEV_JWT_SECRET, subject=f"caller-{uuid.uuid4().hex[:8]}", roles=["limited:call"],
            ttl_seconds=600, issuer="modrpc-dev", audience="modrpc",
        )  # fmt: skip

        async def call(port: int, n: int) -> int:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                ping = channel.unary_unary("/limited.v1.LimitedService/Ping")
                reply = await ping(
                    wire.encode("PingRequest", {"n": n}),
                    metadata=[("authorization", f"Bearer {token}")],
                    timeout=5,
                )
                return int(wire.decode("PingResponse", reply)["n"])

        async def scenario() -> grpc.aio.AioRpcError:
            for n in range(4):
                assert await call(ports[n % 2], n) == n
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(ports[0], 4)
            return refused.value

        error = asyncio.run(scenario())
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "rate limit" in (error.details() or "")
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        assert status is not None
        retry = error_details_pb2.RetryInfo()
        assert any(d.Unpack(retry) for d in status.details)
        assert retry.retry_delay.ToTimedelta().total_seconds() > 0

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
        refused_line = next(
            line for line in metrics.splitlines()
            if line.startswith("modrpc_requests_total{") and 'code="RESOURCE_EXHAUSTED"' in line
        )  # fmt: skip
        assert refused_line.endswith(" 1.0")
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            finally:
                if proc.poll() is None:
                    proc.kill()
