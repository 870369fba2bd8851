"""``python -m bench.abuse``: the gateway's memory (RSS) under bounded attacks on 127.0.0.1.

Each attack runs against a fresh ``modrpc up`` (its state in a temporary folder, the gateway on
a free port), for a few seconds, and stops by itself. For each it prints the gateway process's
RSS before, at its peak during the attack, and a few seconds after, and how a normal caller
(with a token) on another connection fared meanwhile:

- ``idle``: 1,100 TCP connections that never say anything;
- ``half-sent``: 10 connections x 10 streams, each declaring a 4 MB message and sending as much
  of it as flow control allows, never the end;
- ``slow-readers``: 10 connections x 100 calls whose answers (and pings) are never read, for 90 s;
- ``rapid-reset``: 4 attackers opening and resetting streams in a loop (20,000 each), connecting
  again whenever the gateway closes their connection;
- ``rapid-reset-raw``: the same with frames built by hand (50,000 each, within 60 s), about what
  an attacker in C pays per stream;
- ``trickle``: 4 connections x 100 unary ``GetStock`` calls (public) whose 100-byte request gets
  one byte every 2 s, for 20 s; ``trickle-protected``: the same to ``users.CreateUser``, which
  needs credentials the attacker does not send;
- ``closed-window``: 3 connections x 100 whole GetStock requests whose answers can never be sent
  (the connections' window is 0), held for 20 s;
- ``quiet``: no attack for 60 s, only the normal caller: what the gateway spends meanwhile
  anyway, to take from the CPU of an attack that lasts as long (``rapid-reset`` against a
  gateway that bans its address).

    python -m bench.abuse                       # this checkout
    python -m bench.abuse --source DIR          # another checkout of the project (before/after)
    python -m bench.abuse --bare rapid-reset    # the bare grpc.aio echo server (bench.reference)

Only ever points at 127.0.0.1 (the rapid-reset attackers connect from 127.0.0.2, so that a ban of
their address does not refuse the normal caller). Not a test: the figures go in reports, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import h2.exceptions
import h2.settings
import hpack

from bench.reference import READY_PREFIX
from tests.fixtures.raw_h2 import RawH2, closed_within, grpc_headers, grpc_message

ROOT = Path(__file__).resolve().parents[1]
GET_STOCK = "/inventory.v1.InventoryService/GetStock"
STOCK_REQUEST = b"\n\x08WIDGET-1"
ATTACKER = "127.0.0.2"
"""The rapid-reset attackers' address (loopback too): the normal caller's, 127.0.0.1, is not
refused with it when the gateway bans it (``limits.reset_ban``)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Up:
    """``modrpc up`` from ``source`` in a child process, its state in a temporary folder."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.port = _free_port()
        self.folder = tempfile.TemporaryDirectory(prefix="modrpc-abuse-")
        state = Path(self.folder.name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODRPC_")}
        env.update(
            PYTHONPATH=str(source),
            PYTHONUNBUFFERED="1",
            MODRPC_STORE_URL=f"sqlite:///{state}/store.db",
            MODRPC_DATA_DIR=str(state / "data"),
            MODRPC_ADMIN_PORT="0",
            MODRPC_OBSERVABILITY__AUDIT_PATH=str(state / "audit.jsonl"),
            MODRPC_LOG_LEVEL="WARNING",
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", "up", "--port", str(self.port)],
            cwd=source, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "ready" in line:
                break
        else:
            raise RuntimeError(f"modrpc up from {source} exited before it was ready")
        minted = subprocess.run(
            [sys.executable, "-m", "runtime.cli", "token", "--subject", "normal-caller"],
            cwd=source, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        self.token = minted.stdout.strip().splitlines()[-1]
        """A token the gateway accepts: the normal caller is authenticated, with a budget of its
        own (``limits.max_calls_per_client``) apart from the anonymous attacker's address."""

    def rss(self) -> float:
        return _rss_mb(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.folder.cleanup()


class Bare(Up):
    """The bare ``grpc.aio`` echo server (``bench.reference echo``): what grpc.aio alone spends
    under the same attack."""

    def __init__(self) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="modrpc-abuse-bare-")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.reference", "echo", "--port", "0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(READY_PREFIX):
            raise RuntimeError(f"the bare echo server did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        self.token = "bare"  # the bare server reads no credentials


def _caller(port: int, token: str, stop: threading.Event, codes: Counter[str]) -> None:
    """A normal, authenticated caller on its own connection, calling until ``stop``."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(GET_STOCK)
        metadata = (("authorization", f"Bearer {token}"),)
        while not stop.is_set():
            try:
                call(STOCK_REQUEST, timeout=5, metadata=metadata)
                codes["OK"] += 1
            except grpc.RpcError as error:
                codes[error.code().name] += 1  # type: ignore[attr-defined]
            time.sleep(0.05)


def idle(port: int, stop: threading.Event) -> str:
    sockets = []
    for _ in range(1100):
        try:
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            break
    stop.wait(15)
    still = sum(not closed_within(sock, 0.01) for sock in sockets)
    for sock in sockets:
        sock.close()
    return f"{len(sockets)} opened, {still} still open after 15 s"


def half_sent(port: int, stop: threading.Event) -> str:
    connections = [RawH2(port) for _ in range(10)]
    started: dict[tuple[int, int], int] = {}  # (connection, stream) -> bytes sent
    for n, connection in enumerate(connections):
        for _ in range(10):
            stream_id = connection.conn.get_next_available_stream_id()
            connection.conn.send_headers(stream_id, grpc_headers(port, GET_STOCK))
            started[(n, stream_id)] = 0
        connection.flush()
    give_up = time.monotonic() + 8
    while time.monotonic() < give_up:
        for n, connection in enumerate(connections):
            connection.pump(0.01)
            for (owner, stream_id), sent in started.items():
                if owner != n or sent >= (4 << 20) - 100:
                    continue
                try:
                    window = min(connection.conn.local_flow_control_window(stream_id), 16_384)
                except Exception:  # the server reset it
                    continue
                if window <= 5:
                    continue
                chunk = grpc_message(b"y" * (window - 5), declared=4 << 20) if not sent else b"y" * window
                connection.conn.send_data(stream_id, chunk)
                started[(owner, stream_id)] = sent + len(chunk)
            connection.flush()
    for connection in connections:
        connection.close()
    return f"{sum(started.values()) / 1e6:.0f} MB sent, none of it a whole message"


def slow_readers(port: int, stop: threading.Event) -> str:
    connections = []
    for _ in range(10):
        connection = RawH2(port)
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(100):
            try:
                stream_id = connection.conn.get_next_available_stream_id()
                connection.conn.send_headers(stream_id, grpc_headers(port, GET_STOCK))
                connection.conn.send_data(stream_id, grpc_message(STOCK_REQUEST), end_stream=True)
            except Exception:
                break
        connection.flush()
        connection.pump(0.2)  # acknowledges the server's settings, then never reads again
        connections.append(connection)
    stop.wait(90)  # past the default keepalive time + timeout (80 s)
    cut = 0
    for connection in connections:
        connection.sock.setblocking(False)
        try:
            while connection.sock.recv(1 << 20):
                pass
            cut += 1
        except BlockingIOError:
            pass
        except OSError:
            cut += 1
        connection.close()
    return f"{cut}/10 cut off within 90 s"


def _reconnecting(connection: Callable[[int], int], streams: int, how: str) -> str:
    """4 attackers, each sending ``streams`` streams through ``connection(remaining)`` (one
    connection, the streams it sent), connecting again whenever the gateway closes one (within
    60 s); what they did and the CPU they spent."""
    spent: list[float] = []
    connections: list[int] = []
    opened: list[int] = []
    unanswered: list[int] = []

    def attack() -> None:
        started, give_up = time.thread_time(), time.monotonic() + 60
        sent = used = refused = 0
        while sent < streams and time.monotonic() < give_up:
            try:
                sent += connection(streams - sent)
            except TimeoutError:  # the connection attempt went unanswered (the address is banned)
                refused += 1
                continue
            except OSError:
                break
            used += 1
        spent.append(time.thread_time() - started)
        connections.append(used)
        opened.append(sent)
        unanswered.append(refused)

    threads = [threading.Thread(target=attack) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    return (
        f"{sum(opened)} streams opened and reset over {sum(connections)} connections "
        f"({sum(connections) - len(connections)} closed by the gateway and reopened; "
        f"{sum(unanswered)} connection attempts unanswered), attacker CPU {sum(spent):.1f} s ({how})"
    )


def rapid_reset(port: int, stop: threading.Event) -> str:
    """4 attackers x 20,000 streams with the ``h2`` library (``RawH2.rapid_reset``)."""

    def connection(remaining: int) -> int:
        attacker = RawH2(port, source=ATTACKER)
        try:
            attacker.rapid_reset(GET_STOCK, remaining)
            return attacker.opened
        finally:
            attacker.close()

    return _reconnecting(connection, 20_000, "h2, pure Python")


_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def _headers_block(port: int) -> bytes:
    """The request's headers, HPACK-encoded never-indexed: the same bytes for every stream."""
    encoder = hpack.Encoder()
    return bytes(encoder.encode([hpack.NeverIndexedHeaderTuple(k, v) for k, v in grpc_headers(port, GET_STOCK)]))


def _raw_reset_connection(port: int, streams: int, block: bytes) -> int:
    """One connection opening and resetting up to ``streams`` streams with frames built by hand
    (no HTTP/2 library: what an attacker in C pays, near enough); the streams it sent.

    Paced as ``RawH2.rapid_reset`` is: 20 streams, then up to 1 ms reading what came back. A flood
    sent without pause costs the gateway almost nothing (past ``max_concurrent_streams`` grpc
    refuses streams in C, and what the attacker sends before it closes is never read), and
    pacing by PING is ended by the ping strikes (``max_ping_strikes``).
    """
    headers_head = struct.pack("!I", len(block))[1:] + b"\x01\x04"  # HEADERS, END_HEADERS
    reset_head = b"\x00\x00\x04\x03\x00"  # RST_STREAM
    cancel = struct.pack("!I", 8)
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(ATTACKER, 0)) as sock:
        sock.sendall(_PREFACE)
        sock.recv(1 << 16)  # the server's SETTINGS
        sock.sendall(_SETTINGS_ACK)
        sent, stream_id = 0, 1
        try:
            while sent < streams:
                frames = []
                for _ in range(20):
                    sid = struct.pack("!I", stream_id)
                    frames += (headers_head, sid, block, reset_head, sid, cancel)
                    stream_id += 2
                sock.sendall(b"".join(frames))
                sent += 20
                while select.select([sock], [], [], 0.001)[0]:
                    if not sock.recv(1 << 20):
                        return sent  # the server closed the connection
        except OSError:  # reset by the server
            pass
        return sent


def rapid_reset_raw(port: int, stop: threading.Event) -> str:
    """As ``rapid-reset``, with frames built by hand: 4 attackers x 50,000 streams."""
    block = _headers_block(port)
    return _reconnecting(lambda remaining: _raw_reset_connection(port, remaining, block), 50_000, "frames built by hand")


def rapid_reset_rotate(port: int, stop: threading.Event) -> str:
    """As ``rapid-reset-raw``, hanging up after 190 streams on each connection (below
    ``max_reset_streams``, 200) and connecting again: 4 attackers x 50,000 streams."""
    block = _headers_block(port)
    return _reconnecting(
        lambda remaining: _raw_reset_connection(port, min(remaining, 190), block), 50_000, "a fresh connection every 190"
    )


def _trickle(port: int, path: str) -> str:
    """400 unary calls to ``path`` (4 connections x 100) whose 100-byte request gets one byte
    every 2 s, for 20 s, without credentials."""
    connections = [RawH2(port) for _ in range(4)]
    streams = []
    for connection in connections:
        for _ in range(100):
            stream_id = connection.conn.get_next_available_stream_id()
            connection.conn.send_headers(stream_id, grpc_headers(port, path))
            connection.conn.send_data(stream_id, grpc_message(b"", declared=100) + b"y")
            streams.append((connection, stream_id))
        connection.flush()
    for _ in range(10):
        time.sleep(2.0)
        for connection, stream_id in streams:
            try:
                connection.conn.send_data(stream_id, b"y")
            except Exception:  # the server ended it
                continue
        for connection in connections:
            connection.flush()
            connection.pump(0.01)
    ended = Counter(status for connection in connections for status, _ in connection.statuses.values())
    for connection in connections:
        connection.close()
    return f"{len(streams) - sum(ended.values())} still open after 20 s; ended, by grpc-status: {dict(sorted(ended.items()))}"


def closed_window(port: int, stop: threading.Event) -> str:
    """3 connections whose window for answers is 0, each sending 100 whole GetStock requests,
    answering pings, for 20 s: no answer can ever be sent."""
    connections = []
    streams = []
    for _ in range(3):
        connection = RawH2(port)
        connection.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        connection.flush()
        connection.pump(0.1)
        for _ in range(100):
            stream_id = connection.conn.get_next_available_stream_id()
            connection.conn.send_headers(stream_id, grpc_headers(port, GET_STOCK))
            connection.conn.send_data(stream_id, grpc_message(STOCK_REQUEST), end_stream=True)
            streams.append((connection, stream_id))
        connection.flush()
        connections.append(connection)
    give_up = time.monotonic() + 20
    while time.monotonic() < give_up:
        for connection in connections:
            connection.pump(0.05)
    refused = sum(stream_id in connection.statuses for connection, stream_id in streams)
    for connection in connections:
        connection.close()
    return f"{len(streams) - refused} held for 20 s, {refused} refused"


def trickle(port: int, stop: threading.Event) -> str:
    return _trickle(port, GET_STOCK)  # public


def trickle_protected(port: int, stop: threading.Event) -> str:
    return _trickle(port, "/users.v1.UsersService/CreateUser")  # needs credentials


def quiet(port: int, stop: threading.Event) -> str:
    stop.wait(60)
    return "60 s without an attack"


def health_flood(port: int, stop: threading.Event) -> str:
    """Answered ``Health/Check`` calls from 127.0.0.2 as fast as they come back, no credentials:
    4 connections, 50 calls in flight on each, for 20 s, connecting again whenever one ends."""
    return _flood(port, "/grpc.health.v1.Health/Check")


def unknown_flood(port: int, stop: threading.Event) -> str:
    """As ``health-flood``, calling a method no module has (answered UNIMPLEMENTED at once)."""
    return _flood(port, "/nope.v1.Nope/Nothing")


def unauthenticated_flood(port: int, stop: threading.Event) -> str:
    """As ``health-flood``, calling ``users.CreateUser`` without credentials (UNAUTHENTICATED at
    once: the request is never read)."""
    return _flood(port, "/users.v1.UsersService/CreateUser")


def _flood(port: int, path: str) -> str:
    counts: Counter[str] = Counter()
    spent: list[float] = []
    lock = threading.Lock()

    def flood() -> None:
        started = time.thread_time()
        give_up = time.monotonic() + 20
        while time.monotonic() < give_up:
            try:
                connection = RawH2(port, source="127.0.0.2")
            except OSError:  # refused: its SYN unanswered
                with lock:
                    counts["connection attempts unanswered"] += 1
                continue
            with lock:
                counts["connections"] += 1
            try:
                while time.monotonic() < give_up and not connection.closed and connection.goaway is None:
                    statuses = connection.call_all(path, 50, 2.0)
                    with lock:
                        counts.update(f"grpc-status {status}" for status in statuses)
            except (OSError, h2.exceptions.ProtocolError):  # the gateway hung up mid-batch
                pass
            finally:
                connection.close()
        spent.append(time.thread_time() - started)

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return f"{dict(sorted(counts.items()))}; attacker CPU {sum(spent):.1f} s"


ATTACKS: dict[str, Callable[[int, threading.Event], str]] = {
    "idle": idle,
    "half-sent": half_sent,
    "slow-readers": slow_readers,
    "rapid-reset": rapid_reset,
    "rapid-reset-raw": rapid_reset_raw,
    "rapid-reset-rotate": rapid_reset_rotate,
    "closed-window": closed_window,
    "trickle": trickle,
    "trickle-protected": trickle_protected,
    "health-flood": health_flood,
    "unknown-flood": unknown_flood,
    "unauthenticated-flood": unauthenticated_flood,
    "quiet": quiet,
}


def measure(source: Path | None, name: str) -> dict[str, object]:
    """One attack against ``modrpc up`` from ``source`` (None: the bare echo server)."""
    up = Up(source) if source is not None else Bare()
    try:
        time.sleep(1.0)
        before = up.rss()
        peak = before
        stop = threading.Event()
        codes: Counter[str] = Counter()
        caller = threading.Thread(target=_caller, args=(up.port, up.token, stop, codes))
        caller.start()
        outcome: list[str] = []
        attack = threading.Thread(target=lambda: outcome.append(ATTACKS[name](up.port, stop)))
        started = time.monotonic()
        cpu_before = _cpu(up.process.pid)
        attack.start()
        while attack.is_alive():
            peak = max(peak, up.rss())
            time.sleep(0.2)
        cpu = _cpu(up.process.pid) - cpu_before
        stop.set()
        caller.join(10)
        time.sleep(3.0)
        return {
            "attack": name,
            "rss_before_mb": round(before),
            "rss_peak_mb": round(peak),
            "rss_after_mb": round(up.rss()),
            "gateway_cpu_s": round(cpu, 1),
            "seconds": round(time.monotonic() - started, 1),
            "outcome": outcome[0] if outcome else "attack failed",
            "normal_caller": dict(codes),
        }
    finally:
        up.stop()


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout to run modrpc up from")
    parser.add_argument("--bare", action="store_true", help="attack the bare grpc.aio echo server instead")
    parser.add_argument("attacks", nargs="*", help=f"some of {', '.join(ATTACKS)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.attacks) - set(ATTACKS)
    if unknown:
        parser.error(f"unknown attacks {', '.join(sorted(unknown))}")
    for name in args.attacks or ATTACKS:
        result = measure(None if args.bare else args.source.resolve(), name)
        print(json.dumps({**result, "server": "bare grpc.aio echo" if args.bare else "modrpc up"}), flush=True)


if __name__ == "__main__":
    main()
