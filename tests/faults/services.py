"""Private PostgreSQL, Redis and NATS servers for the fault suite, each on a free port.

The shared services on the standard ports (5432, 6379, 4222) are never touched: every server
here lives in a temporary folder of its own, listens on 127.0.0.1 only, and is the one the
suite stops, kills, freezes (SIGSTOP) and starts again. Data survives a stop: PostgreSQL keeps
its data directory, NATS its JetStream store directory, as a real outage and recovery would.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["Missing", "PrivateNats", "PrivatePostgres", "PrivateRedis", "free_port", "missing_tools"]

TOOLS = {"PostgreSQL": ("initdb", "pg_ctl", "postgres"), "Redis": ("redis-server",), "NATS": ("nats-server",)}


class Missing(RuntimeError):
    """A server binary the fault suite needs is not installed."""


def missing_tools() -> list[str]:
    """The server binaries that cannot be found on PATH."""
    return [tool for tools in TOOLS.values() for tool in tools if shutil.which(tool) is None]


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise Missing("running as root, PostgreSQL needs an unprivileged user (postgres or nobody)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, what: str, within: float = 30.0) -> None:
    give_up = time.monotonic() + within
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > give_up:
                raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {within:g}s") from None
            time.sleep(0.05)


class _Server:
    """One server process: started, stopped (SIGTERM or SIGKILL), frozen and thawed."""

    name = "server"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        """Start (again, on the same port and data); returns once it accepts connections."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_listening(self.port, f"{self.name} ({self.log})")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, *, kill: bool = False) -> None:
        """Stop it: SIGTERM (a clean shutdown) or SIGKILL (a crash)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGCONT)  # a frozen server cannot act on SIGTERM
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung server)."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop(kill=True)


class PrivateNats(_Server):
    """``nats-server -js`` with its JetStream store in a folder of its own."""

    name = "nats"

    def command(self) -> list[str]:
        return ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.root / "jetstream")]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class PrivateRedis(_Server):
    """``redis-server`` without persistence."""

    name = "redis"

    def command(self) -> list[str]:
        return [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.root),
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class PrivatePostgres(_Server):
    """A PostgreSQL cluster made with ``initdb`` in a temporary folder (trust auth, user postgres).

    ``postgres`` runs in the foreground as the child, so it can be killed and frozen like the
    others; its Unix socket goes to the cluster's folder, never to /var/run.
    """

    name = "postgres"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        # As root, PostgreSQL runs as an unprivileged user, which must reach its folder: the
        # cluster then lives in a folder of its own under the system's temporary folder, handed
        # to that user (the suite's own folder may sit below folders only root can enter).
        self.home = Path(tempfile.mkdtemp(prefix="modrpc-faults-postgres-")) if os.geteuid() == 0 else root
        self.data = self.home / "data"

    def _as_owner(self, command: list[str]) -> list[str]:
        """PostgreSQL refuses to run as root: as root, run it as an unprivileged user.

        ``setpriv`` execs the command (no intermediate process), so signals reach PostgreSQL
        itself.
        """
        if os.geteuid() != 0:
            return command
        user = _unprivileged_user()
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *command]

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = _unprivileged_user()
            os.chown(self.home, user.pw_uid, user.pw_gid)

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._prepare()
            subprocess.run(
                self._as_owner(
                    ["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
                ),
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        super().start()
        give_up = time.monotonic() + 30
        while subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"], capture_output=True
        ).returncode != 0:
            if time.monotonic() > give_up:
                raise RuntimeError(f"PostgreSQL did not get ready; see {self.log}")
            time.sleep(0.1)

    def command(self) -> list[str]:
        return self._as_owner([
            "postgres", "-D", str(self.data), "-p", str(self.port), "-k", str(self.home),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
        ])  # fmt: skip

    def stop(self, *, kill: bool = False) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            family = self._family()
            self.thaw()
            # SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected at once.
            process.send_signal(signal.SIGKILL if kill else signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if kill:  # the backends outlive a killed postmaster
                for pid in family[1:]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def _family(self) -> list[int]:
        """The postmaster and its children (each backend is a session of its own, so a process
        group does not reach them)."""
        pids = [self.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.pid:
                    pids.append(int(stat.parent.name))
        return pids

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend: connections stay open, nothing answers."""
        for pid in self._family():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._family():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        super().close()
        if self.home != self.root:
            shutil.rmtree(self.home, ignore_errors=True)

    def url(self, schema: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?schema={schema}"
