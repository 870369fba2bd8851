"""Load: h2load driving unary gRPC calls, and a grpc.aio caller that checks every answer.

h2load speaks HTTP/2, not gRPC: it sends the request body file (the 5-byte gRPC frame prefix
and the serialised message) with the gRPC headers, and reports HTTP statuses. A gRPC error is
still HTTP 200, so h2load cannot tell it from success by status. It can by bytes: a
successful echo answers with exactly one DATA frame payload of known size, a failed call with
none (trailers only). :func:`h2load` therefore reports how many calls brought back the expected
response bytes, and :func:`verify` makes real gRPC calls and compares every response.

:func:`grpc_load` drives the same load shape from Python (grpc.aio channels and tasks). It is far
slower than h2load and measures the client as much as the server, so the benchmark never uses
it for figures; the smoke test does, where h2load is not installed, to exercise the harness.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

__all__ = ["H2Result", "Profile", "grpc_frame", "grpc_load", "h2load", "h2load_binary", "verify"]

Metadata = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Profile:
    """One load shape: ``clients`` HTTP/2 connections with ``streams`` calls in flight on each."""

    name: str
    clients: int
    streams: int
    requests: int
    """Calls in the measured run (a short warm-up run precedes it)."""


@dataclass(frozen=True)
class H2Result:
    """What one h2load run measured."""

    requests: int
    succeeded: int
    """HTTP-level successes (2xx) that h2load counted."""
    answered: int
    """Calls whose response carried the expected response bytes: real gRPC successes."""
    seconds: float
    per_second: float
    mean_latency_us: float
    """Mean time from sending a request to its response, in microseconds."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, the bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load_binary() -> str | None:
    return shutil.which("h2load")


_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored")
_TRAFFIC_DATA = re.compile(r"\((\d+)\) data")
_REQUEST_TIME = re.compile(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)")
_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def _microseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"cannot read h2load time {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_h2load(output: str, *, response_frame_bytes: int) -> H2Result:
    """Read h2load's summary. ``response_frame_bytes``: DATA bytes of one successful response."""
    finished = _FINISHED.search(output)
    counts = _REQUESTS.search(output)
    data = _TRAFFIC_DATA.search(output)
    timing = _REQUEST_TIME.search(output)
    if not (finished and counts and data and timing):
        raise RuntimeError(f"unexpected h2load output:\n{output[-2000:]}")
    seconds = float(finished.group(1)) / (1000.0 if finished.group(2) == "ms" else 1.0)
    return H2Result(
        requests=int(counts.group(1)),
        succeeded=int(counts.group(4)),
        answered=int(data.group(1)) // response_frame_bytes,
        seconds=seconds,
        per_second=float(finished.group(3)),
        mean_latency_us=_microseconds(timing.group(3)),
    )


async def h2load(
    address: str,
    path: str,
    body_file: Path,
    *,
    metadata: Metadata,
    clients: int,
    streams: int,
    requests: int,
    response_frame_bytes: int,
    timeout: float = 120.0,
    tls: bool = False,
) -> H2Result:
    """Run h2load against ``http://address{path}`` (``https://`` with ``tls``) and parse what it measured.

    Bounded twice: by ``requests`` and by ``timeout`` seconds, after which h2load is killed.
    """
    binary = h2load_binary()
    if binary is None:
        raise RuntimeError("h2load is not installed (Debian: apt-get install nghttp2-client)")
    command = [
        binary,
        "-n", str(requests), "-c", str(clients), "-m", str(streams), "-t", "1",
        "-d", str(body_file),
        "-H", "content-type: application/grpc",
        "-H", "te: trailers",
    ]  # fmt: skip
    for key, value in metadata:
        command += ["-H", f"{key}: {value}"]
    command.append(f"{'https' if tls else 'http'}://{address}{path}")
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"h2load against {address} did not finish within {timeout:.0f}s") from None
    if process.returncode != 0:
        raise RuntimeError(f"h2load failed with code {process.returncode}:\n{out.decode(errors='replace')[-2000:]}")
    return parse_h2load(out.decode(errors="replace"), response_frame_bytes=response_frame_bytes)


def _channel(address: str, ca: Path | None) -> grpc.aio.Channel:
    """A channel to ``address``: TLS trusting ``ca`` when given, plaintext otherwise."""
    if ca is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca.read_bytes()))


async def verify(
    address: str,
    path: str,
    request: bytes,
    expected: bytes,
    *,
    metadata: Metadata,
    calls: int,
    concurrency: int = 8,
    timeout: float = 10.0,
    ca: Path | None = None,
) -> int:
    """Make ``calls`` real gRPC calls; every one must succeed with exactly ``expected``.

    ``ca``: the target serves TLS with a certificate from this CA. Returns how many succeeded;
    raises ``AssertionError`` naming the first wrong answer or status.
    """
    async with _channel(address, ca) as channel:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        remaining = calls
        done = 0

        async def caller() -> None:
            nonlocal remaining, done
            while remaining > 0:
                remaining -= 1
                try:
                    response = await call(request, metadata=tuple(metadata), timeout=timeout)
                except grpc.aio.AioRpcError as exc:
                    raise AssertionError(f"{address}{path}: {exc.code().name}: {exc.details()}") from exc
                if response != expected:
                    raise AssertionError(f"{address}{path}: answered {response!r}, expected {expected!r}")
                done += 1

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return done


async def grpc_load(
    address: str,
    path: str,
    request: bytes,
    expected: bytes,
    *,
    metadata: Metadata,
    clients: int,
    streams: int,
    requests: int,
    timeout: float = 10.0,
    ca: Path | None = None,
) -> H2Result:
    """h2load's load shape from grpc.aio: ``clients`` channels, ``streams`` calls in flight on each.

    Counts as answered only the calls that succeeded with exactly ``expected``.
    """
    channels = [_channel(address, ca) for _ in range(clients)]
    remaining = requests
    answered = 0
    latencies: list[float] = []

    async def stream(channel: grpc.aio.Channel) -> None:
        nonlocal remaining, answered
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        while remaining > 0:
            remaining -= 1
            sent = time.perf_counter()
            try:
                response = await call(request, metadata=tuple(metadata), timeout=timeout)
            except grpc.aio.AioRpcError:
                continue
            latencies.append(time.perf_counter() - sent)
            answered += response == expected

    started = time.perf_counter()
    try:
        await asyncio.gather(*(stream(channel) for channel in channels for _ in range(streams)))
    finally:
        for channel in channels:
            await channel.close(None)
    seconds = time.perf_counter() - started
    return H2Result(
        requests=requests,
        succeeded=len(latencies),
        answered=answered,
        seconds=seconds,
        per_second=requests / seconds,
        mean_latency_us=sum(latencies) / max(len(latencies), 1) * 1e6,
    )
