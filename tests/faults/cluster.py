"""The system under fault: ``modrpc up`` on the example modules, against private servers.

:class:`Cluster` starts private PostgreSQL (the manifest store), NATS (the fabric) and Redis
(rate limits), then the real ``modrpc up`` as a user runs it, in a process group of its own so
that a Ctrl-C can be played exactly as a terminal sends it. Its output is read for its whole
life (a pipe nobody reads would freeze it) and kept in ``up.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.config import DEV_JWT_SECRET
from runtime.gateway import issue_dev_token
from runtime.store import WorkerRecord, open_store
from tests.faults.services import PrivateNats, PrivatePostgres, PrivateRedis, free_port

__all__ = ["Cluster", "Process"]

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "faults"
DRAIN_SECONDS = 5.0
"""``drain_seconds`` of every process in the suite."""
HANG_SECONDS = 4.0
"""The supervisor's ``worker_hang_seconds`` in the suite (10 by default), so a hang scenario is short."""
ROLES = ("users:read", "users:write", "orders:read", "orders:write", "notifications:read", "inventory:write")


@dataclass
class Process:
    """A modrpc command in a process group of its own, its output read line by line."""

    name: str
    process: asyncio.subprocess.Process
    log: Path
    lines: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None
    _seen: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def start(cls, name: str, args: list[str], env: dict[str, str], log: Path) -> Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "runtime.cli", *args,
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        started = cls(name, process, log)
        started._reader = asyncio.create_task(started._read())
        return started

    async def _read(self) -> None:
        assert self.process.stdout is not None
        with self.log.open("a") as out:
            while line := await self.process.stdout.readline():
                text = line.decode(errors="replace").rstrip("\n")
                out.write(text + "\n")
                out.flush()
                if not text.startswith("{"):  # printed lines, not log records
                    self.lines.append(text)
                    self._seen.set()

    async def line_with(self, text: str, within: float) -> str:
        give_up = time.monotonic() + within
        checked = 0
        while True:
            for line in self.lines[checked:]:
                if text in line:
                    return line
            checked = len(self.lines)
            if self.process.returncode is not None and self._reader is not None and self._reader.done():
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}) before {text!r}; see {self.log}")
            left = give_up - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no line with {text!r} within {within:g}s; see {self.log}")
            self._seen.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.5)):
                    await self._seen.wait()

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the whole process group, as a terminal sends Ctrl-C."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    async def stop(self, sig: int = signal.SIGTERM, within: float = 60.0) -> float:
        """Send ``sig`` to the process (not its group); seconds until it exited."""
        started = time.monotonic()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
        try:
            async with asyncio.timeout(within):
                await self.process.wait()
        except TimeoutError:
            self.kill()
            await self.process.wait()
            raise
        finally:
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._reader, 5)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the whole group: nothing of it outlives the suite."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


class Cluster:
    """Private servers plus ``modrpc up``; ``async with Cluster(root)``."""

    def __init__(self, root: Path, *, extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.postgres = PrivatePostgres(root / "postgres")
        self.nats = PrivateNats(root / "nats")
        self.redis = PrivateRedis(root / "redis")
        self.data = root / "data"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        self.up: Process | None = None
        self.gateways: list[Process] = []
        self.token = issue_dev_token(
            DEV_JWT_SECRET, subject="faults", roles=list(ROLES), ttl_seconds=3600, issuer="modrpc-dev", audience="modrpc"
        )

    @property
    def store_url(self) -> str:
        return self.postgres.url(SCHEMA)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODRPC_")}
        env.update(
            MODRPC_STORE_URL=self.store_url,
            MODRPC_FABRIC_URL=self.nats.url,
            MODRPC_RATELIMIT_URL=self.redis.url,
            MODRPC_DATA_DIR=str(self.data),
            MODRPC_ADMIN_PORT="0",
            MODRPC_LOG_LEVEL="INFO",
            MODRPC_OBSERVABILITY__AUDIT_PATH=str(self.root / "audit.jsonl"),
            MODRPC_SECRETS__FILE_DIR=str(self.root / "secrets"),
            MODRPC_TLS__DIR=str(self.root / "tls"),
            MODRPC_WORKER_HANG_SECONDS=str(HANG_SECONDS),
            MODRPC_DRAIN_SECONDS=str(DRAIN_SECONDS),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    async def __aenter__(self) -> Cluster:
        try:
            await asyncio.gather(*(asyncio.to_thread(s.start) for s in (self.postgres, self.nats, self.redis)))
            for attempt in range(3):  # a free port may be taken by a worker before the gateway binds it
                self.up = await Process.start("modrpc up", ["up", "--port", str(self.port)], self.env(), self.root / "up.log")
                try:
                    await self.up.line_with("ready", within=120)
                    break
                except RuntimeError:
                    if attempt == 2 or "Failed to bind" not in "\n".join(self.up.lines):
                        raise
                    await self.up.stop()
                    self.port = free_port()
                    self.address = f"127.0.0.1:{self.port}"
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for process in [*self.gateways, *([self.up] if self.up else [])]:
            if process.process.returncode is None:
                with contextlib.suppress(Exception):
                    process.signal_group(signal.SIGCONT)
                    await process.stop(signal.SIGTERM, within=30)
            process.kill()
        for server in (self.redis, self.nats, self.postgres):
            server.close()

    async def start_gateway(self) -> tuple[Process, str]:
        """A second gateway (``modrpc gateway``) on the same store; its address once ready."""
        port = free_port()
        process = await Process.start(
            f"gateway {port}", ["gateway", "--port", str(port)], self.env(), self.root / f"gateway-{port}.log"
        )
        self.gateways.append(process)
        await process.line_with("ready", within=60)
        return process, f"127.0.0.1:{port}"

    async def workers(self, module: str) -> list[WorkerRecord]:
        async with open_store(self.store_url) as store:
            return await store.list_workers(module)

    async def wait_workers(self, module: str, count: int, within: float = 60.0) -> list[WorkerRecord]:
        """The module's registered workers once ``count`` of them are alive and fresh."""
        give_up = time.monotonic() + within
        while True:
            workers = [w for w in await self.workers(module) if w.healthy and _alive(w.pid)]
            if len(workers) >= count:
                return workers
            if time.monotonic() > give_up:
                raise RuntimeError(f"{module}: {len(workers)} of {count} workers after {within:g}s")
            await asyncio.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
