"""``modrpc worker`` as its own process: ready line, registration, and a graceful SIGTERM.

The worker runs through the real console entry point with its store, data and audit files in a
temporary folder. The call kept in flight across SIGTERM is the test-only ``probe`` module's
``Echo`` with a delay (the example modules answer too fast to catch one mid-call); it tells
this process that it has started by touching a marker file in the worker's data folder.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest

from gen.users.v2025_06_01 import users_pb2
from gen.users.v2025_06_01.client import UsersClient
from runtime.manifest import load_module
from runtime.store import open_store
from runtime.worker._service import load_catalog
from tests.conftest import MODULES_DIR, PROBE_MODULES_DIR, ROOT, make_dial
from tests.fixtures.worker_modules.probe_client import ProbeClient

READY = "modrpc-worker-ready "


@dataclass
class WorkerProcess:
    process: asyncio.subprocess.Process
    address: str
    store_url: str
    data_dir: Path
    log: Path


def dial_process(tmp_path: Path, address: str, module: str) -> grpc.aio.Channel:
    """A channel to the worker process, as the gateway of its TLS folder, for a caller with every role."""
    return make_dial(tmp_path / "tls")(address, module)


async def start_process(tmp_path: Path, module: str, modules_dir: Path) -> WorkerProcess:
    data_dir = tmp_path / f"{module}-data"
    data_dir.mkdir()
    store_url = f"sqlite:///{tmp_path}/store.db"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "MODRPC_STORE_URL": store_url,
        "MODRPC_DATA_DIR": str(data_dir),
        "MODRPC_OBSERVABILITY__AUDIT_PATH": str(tmp_path / "audit.jsonl"),
        "MODRPC_DRAIN_SECONDS": "10",
        "MODRPC_TLS__DIR": str(tmp_path / "tls"),
    }
    env.pop("MODRPC_SUPERVISOR_PID", None)
    log = tmp_path / f"{module}.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "runtime.cli", "worker", module,
            "--port", "0", "--modules", str(modules_dir),
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"worker {module} printed nothing in 30 s; log:\n{log.read_text()}")
    text = line.decode().strip()
    if not text.startswith(READY):
        await process.wait()
        pytest.fail(f"worker {module} said {text!r}, not ready; log:\n{log.read_text()}")
    prefix, name, address = text.split()
    assert (prefix + " ", name) == (READY, module)
    return WorkerProcess(process, address, store_url, data_dir, log)


@pytest.fixture
async def processes() -> AsyncIterator[list[WorkerProcess]]:
    """Worker processes a test started; any still running afterwards is killed."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.process.returncode is None:
            worker.process.kill()
            await worker.process.wait()


async def wait_for_file(path: Path, within: float) -> None:
    give_up = time.monotonic() + within
    while not await asyncio.to_thread(path.exists):
        assert time.monotonic() < give_up, f"{path.name} did not appear within {within} s"
        await asyncio.sleep(0.02)


async def test_sigterm_drains_the_call_in_flight_exits_zero_and_deregisters(
    tmp_path: Path, processes: list[WorkerProcess],
) -> None:
    worker = await start_process(tmp_path, "probe", PROBE_MODULES_DIR)
    processes.append(worker)
    async with open_store(worker.store_url) as store:
        (record,) = await store.list_workers("probe")
        assert record.address == worker.address and record.pid == worker.process.pid

        descriptor = load_catalog(load_module(PROBE_MODULES_DIR / "probe")).latest.descriptor
        async with dial_process(tmp_path, worker.address, "probe") as channel:
            client = ProbeClient(channel, descriptor)
            in_flight = asyncio.ensure_future(
                client.call("Echo", {"text": "drained", "delay": 1.0}, timeout=15)
            )
            await wait_for_file(worker.data_dir / "probe-started-drained", within=10)
            worker.process.send_signal(signal.SIGTERM)
            reply, call = await in_flight
            assert reply["text"] == "drained"
            assert await call.code() == grpc.StatusCode.OK

        code = await asyncio.wait_for(worker.process.wait(), 15)
        assert code == 0, worker.log.read_text()
        assert await store.list_workers("probe") == []


async def test_users_worker_serves_then_stops_cleanly_on_sigterm(
    tmp_path: Path, processes: list[WorkerProcess],
) -> None:
    worker = await start_process(tmp_path, "users", MODULES_DIR)
    processes.append(worker)
    async with open_store(worker.store_url) as store:
        (record,) = await store.list_workers("users")
        assert record.address == worker.address and record.healthy
        async with dial_process(tmp_path, worker.address, "users") as channel:
            user = await UsersClient(channel).create_user(
                users_pb2.CreateUserRequest(given_name="Ada", email="ada@example.com"), timeout=10
            )
            assert user.given_name == "Ada"
        worker.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(worker.process.wait(), 15)
        assert code == 0, worker.log.read_text()
        assert await store.list_workers("users") == []
        # the data outlives the worker: the user is in the worker's own data folder
        assert (worker.data_dir / "users.sqlite3").exists()
