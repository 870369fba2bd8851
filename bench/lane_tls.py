"""What mutual TLS costs a lane call, against the same lane in plaintext, in one run.

The full gateway path runs with internal mutual TLS only (a worker has no plaintext port), so the
plaintext comparison is made one level down, on the hop that TLS wraps: a lane server in its
own process serving an echo endpoint, and a lane client in this process driving ``concurrency``
calls at a time, once over plaintext TCP and once over mutual TLS with the development CA's
certificates (``gateway`` calling ``module:echo``). CPU per call is read for each side
(``time.process_time`` here, ``/proc`` for the server), so the client's share, which is what the
gateway pays, is known apart from the worker's.

    python -m bench.lane_tls serve --tls-dir DIR     # a lane server (plaintext without --tls-dir)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.processes import Server
from runtime.deadline import Deadline
from runtime.identity import Peer
from runtime.lane import LaneClient, LaneServer
from runtime.tls import InternalTls, ensure_identity
from runtime.transport import MetadataIn, Reply

__all__ = ["measure", "run"]

_PAYLOAD = b"modrpc benchmark: the same bytes there and back" * 2
_METADATA = (("x-request-id", "bench"), ("x-api-version", "2025-01-15"), ("x-modrpc-principal", "bench;echo:call;jwt"))


class _Echo:
    async def unary(self, method: str, payload: bytes, metadata: MetadataIn, deadline: Deadline | None) -> Reply:
        return payload, ()


async def _serve(tls_dir: str | None) -> None:
    tls = None if tls_dir is None else InternalTls.load(Path(tls_dir), Peer.module("echo"))
    server = LaneServer(_Echo(), host="127.0.0.1", tls=tls)
    address = await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print(f"listening {address}", flush=True)
    await stop.wait()
    await server.stop(0.5)


async def measure(address: str, server: Server, tls: InternalTls | None, calls: int, concurrency: int) -> dict[str, float]:
    """Drive ``calls`` echo calls at ``concurrency``; calls per second and CPU µs per call each side."""
    client = LaneClient(address, tls=tls, server=Peer.module("echo") if tls is not None else None)
    try:
        for _ in range(200):  # connect and warm up
            await client.unary("/echo.v1.EchoService/Echo", _PAYLOAD, _METADATA, None)
        remaining = calls

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                body, _ = await client.unary("/echo.v1.EchoService/Echo", _PAYLOAD, _METADATA, None)
                assert body == _PAYLOAD

        server_before, client_before, started = server.cpu_seconds(), time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        client_cpu, server_cpu = time.process_time() - client_before, server.cpu_seconds() - server_before
    finally:
        await client.close()
    return {
        "per_second": calls / seconds,
        "client_cpu_us_per_call": client_cpu / calls * 1e6,
        "server_cpu_us_per_call": server_cpu / calls * 1e6,
    }


PROFILES = ((1, 3_000), (40, 20_000))
"""(calls in flight, calls): one at a time, and the gateway's c4/m10 load (40 in flight)."""


async def run(profiles: tuple[tuple[int, int], ...] = PROFILES, rounds: int = 3) -> dict[str, Any]:
    """Plaintext and mutual TLS side by side at each profile, best of ``rounds`` each."""
    with tempfile.TemporaryDirectory(prefix="modrpc-bench-lane-") as tmp:
        folder = Path(tmp)
        for peer in (Peer.gateway(), Peer.module("echo")):
            ensure_identity(folder, peer, dev_ca=True)
        gateway = InternalTls.load(folder, Peer.gateway())
        command = [sys.executable, "-m", "bench.lane_tls", "serve"]
        plain = await Server.start("lane_plain", command, ready="listening ")
        secure = await Server.start("lane_mtls", [*command, "--tls-dir", str(folder)], ready="listening ")
        figures: dict[str, Any] = {}
        try:
            for concurrency, calls in profiles:
                results: dict[str, list[dict[str, float]]] = {"plaintext": [], "mtls": []}
                for _ in range(rounds):
                    results["plaintext"].append(await measure(plain.address, plain, None, calls, concurrency))
                    results["mtls"].append(await measure(secure.address, secure, gateway, calls, concurrency))
                figures[f"c{concurrency}"] = _summary(results, calls)
        finally:
            await plain.stop()
            await secure.stop()
    return figures


def _summary(results: dict[str, list[dict[str, float]]], calls: int) -> dict[str, Any]:
    best = {
        kind: {
            "per_second": max(r["per_second"] for r in rounds),
            "client_cpu_us_per_call": min(r["client_cpu_us_per_call"] for r in rounds),
            "server_cpu_us_per_call": min(r["server_cpu_us_per_call"] for r in rounds),
        }
        for kind, rounds in results.items()
    }
    added = {
        side: best["mtls"][f"{side}_cpu_us_per_call"] - best["plaintext"][f"{side}_cpu_us_per_call"]
        for side in ("client", "server")
    }
    return {"calls": calls, "best": best, "added_cpu_us_per_call": added, "rounds": results}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lane_tls", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("serve",))
    parser.add_argument("--tls-dir", default=None)
    args = parser.parse_args()
    asyncio.run(_serve(args.tls_dir))


if __name__ == "__main__":
    main()
