"""The worker processes of ``modrpc up``: started, read, restarted when they crash, stopped.

Each worker is a ``modrpc worker`` child. Both of its output streams are read for as long as it
lives: a pipe nobody reads fills up, and the worker writing to it (a handler's ``print``, a log
burst) then blocks for good. What it writes lands in this process's log under the module's
name: its log records (JSON lines, which a supervised worker always writes) keep their level,
logger and request id; anything else on stdout (``print``) is INFO, and on stderr (a stray
traceback) WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from runtime.cli._watchdog import watch_progress
from runtime.config import Settings
from runtime.observability import MODULE_ATTR

__all__ = ["READY_PREFIX", "Announce", "Fleet", "Forget", "WorkerProcess"]

log = logging.getLogger("modrpc.up")

READY_PREFIX = "modrpc-worker-ready "
"""The line a worker child prints once it serves: the prefix, the module, then its address."""

MAX_LINE = 64 * 1024
"""Longer output without a newline is passed on in pieces of this size."""

KILL_MARGIN = 2.0
"""Seconds past its grace a stopping worker has to close down before it is killed."""

Forget = Callable[[int, str], Awaitable[None]]
"""Drops what a dead worker process (pid, address) left registered in the store."""

Announce = Callable[[], Awaitable[None]]
"""Runs once a restarted worker serves, before the restart is announced."""


async def _forget_nothing(pid: int, address: str) -> None:
    return None


async def _announce_nothing() -> None:
    return None


class WorkerProcess:
    """One supervised worker process of a module."""

    def __init__(
        self,
        module: str,
        settings: Settings,
        config: Path | None,
        forget: Forget = _forget_nothing,
        restarted: Announce = _announce_nothing,
        *,
        project: Path | None = None,
    ) -> None:
        self.module = module
        self.settings = settings
        self.config = config
        self.forget = forget
        self.restarted = restarted
        self.project = project or Path.cwd()
        self.modules_dir = (self.project / settings.modules_dir).resolve()
        self.process: asyncio.subprocess.Process | None = None
        self.address = ""
        self.restarts = 0
        self.stopping = False
        self._ready: asyncio.Future[str] | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._log = logging.getLogger(f"modrpc.worker.{module}")

    async def spawn(self) -> str:
        """Start the process and wait until it serves; its address."""
        cmd = [
            sys.executable, "-m", "runtime.cli", "worker", self.module,
            "--project", str(self.project), "--modules", str(self.modules_dir),
        ]  # fmt: skip
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            MODRPC_SUPERVISOR_PID=str(os.getpid()),
            MODRPC_LOG_FORMAT="json",  # parsed here, then shown in this process's format
        )
        # A session of its own: a terminal's Ctrl-C reaches the supervisor only, which drains the
        # gateway first and then stops the workers, instead of every process stopping at once.
        self.process = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True
        )
        ready = self._ready = asyncio.get_running_loop().create_future()
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            asyncio.create_task(self._pump(self.process.stdout, self._stdout_line), name=f"{self.module}-stdout"),
            asyncio.create_task(self._pump(self.process.stderr, self._stderr_line), name=f"{self.module}-stderr"),
        ]
        process = self.process
        waiter = asyncio.create_task(process.wait())
        try:
            await asyncio.wait((ready, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not ready.done():
            await self._drain_readers()  # the ready line may still be in the pipe
        if not ready.done():
            raise RuntimeError(f"worker {self.module} exited with code {process.returncode} before it was ready")
        self.address = ready.result()
        return self.address

    async def _pump(self, stream: asyncio.StreamReader, on_line: Callable[[str], None]) -> None:
        """Read ``stream`` to its end, line by line, whatever the lines' length."""
        pending = b""
        while True:
            chunk = await stream.read(MAX_LINE)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            while len(pending) >= MAX_LINE:
                lines.append(pending[:MAX_LINE])
                pending = pending[MAX_LINE:]
            for line in lines:
                on_line(line.decode("utf-8", "replace").rstrip("\r"))
        if pending:
            on_line(pending.decode("utf-8", "replace"))

    def _stdout_line(self, text: str) -> None:
        if text.startswith(READY_PREFIX) and self._ready is not None and not self._ready.done():
            self._ready.set_result(text.split()[-1])
            return
        if text.strip():
            self._emit(logging.INFO, text, "stdout")

    def _stderr_line(self, text: str) -> None:
        if not text.strip():
            return
        if text.startswith("{"):
            try:
                entry = json.loads(text)
            except ValueError:
                entry = None
            if isinstance(entry, dict) and "message" in entry and "level" in entry:
                self._relay(entry)
                return
        self._emit(logging.WARNING, text, "stderr")

    def _emit(self, level: int, text: str, stream: str) -> None:
        self._log.log(level, "%s", text, extra={MODULE_ATTR: self.module, "stream": stream})

    def _relay(self, entry: dict[str, object]) -> None:
        """A worker's own log record, logged again here with its level, logger and ids."""
        level = logging.getLevelName(str(entry.get("level", "INFO")))
        message = str(entry.get("message", ""))
        if entry.get("exc"):
            message += "\n" + str(entry["exc"])
        extra = {k: v for k, v in entry.items() if k not in ("ts", "level", "logger", "message", "exc")}
        extra[MODULE_ATTR] = self.module
        record = logging.getLogger(str(entry.get("logger") or self._log.name)).makeRecord(
            str(entry.get("logger") or self._log.name),
            level if isinstance(level, int) else logging.INFO,
            "(worker)", 0, message, (), None, extra=_safe_extra(extra),
        )  # fmt: skip
        logging.getLogger(record.name).handle(record)

    async def _drain_readers(self) -> None:
        """Let the readers pass on what the process wrote before it ended."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*self._readers, return_exceptions=True)

    async def _wait(self) -> int:
        """Wait for the child to exit; kill it first if it hangs (see runtime.cli._watchdog)."""
        assert self.process is not None
        process, hang = self.process, self.settings.worker_hang_seconds
        if not hang or not self.address:
            return await process.wait()
        from runtime.identity import Peer
        from runtime.tls import InternalTls

        # Asked as the gateway: workers take mutual TLS from the deployment CA only.
        tls = InternalTls.load(Path(self.settings.tls.dir), Peer.gateway(), dev_ca=self.settings.tls.dev_ca)
        watchdog = asyncio.create_task(watch_progress(self.module, self.address, hang, tls))
        exited = asyncio.create_task(process.wait())
        try:
            await asyncio.wait((watchdog, exited), return_when=asyncio.FIRST_COMPLETED)
            if watchdog.done() and not exited.done() and not self.stopping:
                process.kill()
            return await exited
        finally:
            for task in (watchdog, exited):
                task.cancel()
            await asyncio.gather(watchdog, exited, return_exceptions=True)

    async def supervise(self) -> None:
        """Wait for the child; restart it when it dies unasked or hangs, with a growing backoff."""
        while not self.stopping:
            assert self.process is not None
            code = await self._wait()
            await self._drain_readers()
            if self.stopping:
                return
            # A worker killed outright never deregistered: until its record goes stale, gateways
            # and other workers would keep sending calls to an address nobody listens on.
            await self.forget(self.process.pid, self.address)
            self.restarts += 1
            settings = self.settings
            backoff = min(
                settings.worker_restart_backoff_max,
                settings.worker_restart_backoff * 2 ** min(self.restarts - 1, 16),
            )
            log.error("worker %s exited with code %s; restarting in %.1fs (restart %d)", self.module, code, backoff, self.restarts)
            await asyncio.sleep(backoff)
            try:
                address = await self.spawn()
                await self.restarted()
                log.warning("worker %s restarted on %s", self.module, address)
                print(f"{self.module} restarted on {address}", flush=True)
            except Exception as exc:
                log.error("worker %s failed to restart: %s", self.module, exc)

    async def stop(self, grace: float, kill_margin: float = KILL_MARGIN) -> None:
        """SIGTERM, then SIGKILL if the worker has not exited ``grace`` + ``kill_margin`` seconds
        later (the margin lets a worker that drained for ``grace`` itself close down)."""
        self.stopping = True
        if self.process is None or self.process.returncode is not None:
            await self._drain_readers()
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace + kill_margin):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        await self._drain_readers()


_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _safe_extra(extra: dict[str, object]) -> dict[str, object]:
    """``extra`` without keys a LogRecord refuses to have overwritten."""
    return {k: v for k, v in extra.items() if k not in _RESERVED}


class Fleet:
    """Every worker process of one ``modrpc up``, by module: started, replaced, removed.

    Warm pools: each module keeps at least ``warm_pool`` live processes (at least one), each
    restarted when it dies, so the minimum holds.
    """

    def __init__(self, settings: Settings, config: Path | None, forget: Forget, restarted: Announce) -> None:
        self.settings = settings
        self.config = config
        self.forget = forget
        self.restarted = restarted
        self.workers: dict[str, list[WorkerProcess]] = {}
        self._supervisors: dict[WorkerProcess, asyncio.Task[None]] = {}

    def _make(self, directory: Path) -> list[WorkerProcess]:
        from runtime.manifest import load_manifest

        count = max(1, load_manifest(directory / "module.toml").module.warm_pool)
        return [
            WorkerProcess(directory.name, self.settings, self.config, self.forget, self.restarted)
            for _ in range(count)
        ]

    async def _start(self, processes: list[WorkerProcess]) -> list[str]:
        try:
            addresses = await asyncio.gather(*(p.spawn() for p in processes))
        except BaseException:
            await asyncio.gather(*(p.stop(0) for p in processes), return_exceptions=True)
            raise
        for process in processes:
            self._supervisors[process] = asyncio.create_task(process.supervise())
        return list(addresses)

    async def add(self, directories: list[Path]) -> list[tuple[str, str]]:
        """Start the workers of these modules; (module, address) of each process."""
        made = {d.name: self._make(d) for d in directories}
        processes = [p for group in made.values() for p in group]
        addresses = await self._start(processes)
        self.workers.update(made)
        return [(p.module, a) for p, a in zip(processes, addresses, strict=True)]

    async def replace(self, directory: Path) -> list[str]:
        """New workers of a module first, then the old ones stopped: no moment without one."""
        fresh = self._make(directory)
        addresses = await self._start(fresh)
        old, self.workers[directory.name] = self.workers.get(directory.name, []), fresh
        await self._stop(old)
        return addresses

    async def remove(self, module: str) -> None:
        await self._stop(self.workers.pop(module, []))

    async def _stop(
        self, processes: list[WorkerProcess], grace: float | None = None, kill_margin: float = KILL_MARGIN
    ) -> None:
        for process in processes:
            process.stopping = True
        grace = self.settings.drain_seconds if grace is None else grace
        await asyncio.gather(*(p.stop(grace, kill_margin) for p in processes), return_exceptions=True)
        for process in processes:
            task = self._supervisors.pop(process, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def stop(self, grace: float | None = None, kill_margin: float = KILL_MARGIN) -> None:
        """Stop every worker, each given ``grace`` seconds (the drain time by default) and
        ``kill_margin`` more before it is killed; whatever happened, none outlives the supervisor."""
        everything = [p for group in self.workers.values() for p in group]
        self.workers.clear()
        await self._stop(everything, grace, kill_margin)

    @property
    def count(self) -> int:
        return sum(len(group) for group in self.workers.values())
