"""The processes a benchmark drives: started, waited for, measured through ``/proc``, stopped.

Every server under test runs in its own process so that its CPU time (user + system, all
threads, from ``/proc/<pid>/stat``) is its own, and so that the gateway and the worker each get
a core, as they would in production.

    async with Server.start(["python", "-m", "bench.reference", "echo"], ready="listening ") as echo:
        before = echo.cpu_seconds()
        ...  # drive load at echo.address
        spent = echo.cpu_seconds() - before
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["CLOCK_TICKS", "Server", "cpu_seconds"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
"""Kernel clock ticks per second: the unit of ``utime`` and ``stime`` in ``/proc/<pid>/stat``."""

_ADDRESS = re.compile(r"(\d+\.\d+\.\d+\.\d+:\d+)")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process ``pid`` has used so far, over all its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; every field after its closing parenthesis is plain.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


class Server:
    """A child process that prints a line starting with ``ready`` (and its address) once it serves."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, address: str, pids: Sequence[int] = ()) -> None:
        self.name = name
        self.process = process
        self.address = address
        self.pids = tuple(pids) or (process.pid,)
        """The processes whose CPU counts as this server's (nginx: master and workers)."""
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        name: str,
        command: Sequence[str],
        *,
        ready: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 60.0,
    ) -> Server:
        """Start ``command`` and wait (up to ``timeout`` s) for a stdout line starting with ``ready``.

        The first ``host:port`` on that line is the server's address. Output after it is read
        and dropped, so a chatty server never blocks on a full pipe.
        """
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        assert process.stdout is not None and process.stderr is not None
        stderr_tail: list[bytes] = []
        errors = asyncio.create_task(_collect(process.stderr, stderr_tail))
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await process.stdout.readline()
                    if not line:
                        await process.wait()
                        await errors
                        raise RuntimeError(
                            f"{name} exited with code {process.returncode} before it was ready:\n"
                            + b"".join(stderr_tail).decode(errors="replace")[-2000:]
                        )
                    text = line.decode(errors="replace").strip()
                    if text.startswith(ready):
                        match = _ADDRESS.search(text)
                        if match is None:
                            raise RuntimeError(f"{name} said it was ready but gave no address: {text!r}")
                        break
        except BaseException:
            errors.cancel()
            await _terminate(process, 2.0)
            raise
        server = cls(name, process, match.group(1))
        server._drain = asyncio.create_task(_drain(process.stdout, errors))
        return server

    @classmethod
    async def start_polling(cls, name: str, command: Sequence[str], *, address: str, timeout: float = 30.0) -> Server:
        """Start a server that prints nothing when ready (nginx): wait until ``address`` accepts."""
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True
        )
        host, _, port = address.rpartition(":")
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if process.returncode is not None:
                        assert process.stderr is not None
                        err = (await process.stderr.read()).decode(errors="replace")
                        raise RuntimeError(f"{name} exited with code {process.returncode}: {err[-2000:]}")
                    try:
                        _, writer = await asyncio.open_connection(host, int(port))
                    except OSError:
                        await asyncio.sleep(0.05)
                        continue
                    writer.close()
                    await writer.wait_closed()
                    break
        except BaseException:
            await _terminate(process, 2.0)
            raise
        return cls(name, process, address)

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by this server's processes."""
        return sum(cpu_seconds(pid) for pid in self.pids)

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds. Safe twice."""
        await _terminate(self.process, grace)
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def _collect(stream: asyncio.StreamReader, tail: list[bytes]) -> None:
    while line := await stream.readline():
        tail.append(line)
        del tail[:-50]


async def _drain(stdout: asyncio.StreamReader, stderr: asyncio.Task[None]) -> None:
    try:
        while await stdout.readline():
            pass
        await stderr
    finally:
        stderr.cancel()


async def _terminate(process: asyncio.subprocess.Process, grace: float) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
