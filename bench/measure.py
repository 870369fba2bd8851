"""What one benchmark run measures, and the targets it compares the figures with.

:func:`run` starts a :func:`bench.topology.topology`, checks every target with real gRPC calls,
then drives each with h2load at each :class:`bench.load.Profile`, reading the CPU time of every
process on the path before and after. Targets are measured in ``rounds``, the order rotated
each round, and each figure keeps its best round (highest throughput, lowest latency, lowest
CPU per call): on a shared machine noise only ever makes a figure worse, so the best of a few
rounds is the one least disturbed. Every round's figures are kept in the JSON as well.

Micro-benchmarks of version resolution and of one transformer hop run in this process, and
server-streaming throughput (:mod:`bench.streams`) is measured on the same servers.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from bench import lane_tls
from bench import streams as streams_module
from bench.load import Profile, grpc_load, h2load, verify
from bench.topology import ROOT, Target, Topology, topology
from runtime.versions import VersionCatalog, run_chain

__all__ = ["FULL", "GOALS", "SMOKE", "Goal", "measure_target", "micro", "run", "write_json"]

FULL = (
    Profile("c1/m1", clients=1, streams=1, requests=1500),
    Profile("c4/m10", clients=4, streams=10, requests=6000),
)
"""The profiles ``make bench`` measures."""

SMOKE = (
    Profile("c1/m1", clients=1, streams=1, requests=100),
    Profile("c4/m10", clients=4, streams=10, requests=200),
)
"""A few hundred calls: enough to prove the harness works, far too few to mean anything."""

TARGET_ORDER = (
    "bare", "direct", "gateway", "gateway_edge", "gateway_grpc", "embedded", "lane_proxy", "proxy", "nginx",
    "nginx_bare", "proxy_bare",
)  # fmt: skip


async def measure_target(
    top: Topology, target: Target, profile: Profile, *, warmup: int, driver: str = "h2load"
) -> dict[str, Any]:
    """Drive ``profile`` against ``target``; throughput, latency and CPU per call of each process.

    ``driver`` is ``h2load`` (every figure) or ``grpc`` (:func:`bench.load.grpc_load`, for the
    smoke test where h2load is missing; its figures mean little).
    """
    call = top.call

    async def load(requests: int) -> Any:
        if driver == "grpc":
            return await grpc_load(
                target.address, call.path, call.request, call.response, metadata=call.metadata,
                clients=profile.clients, streams=profile.streams, requests=requests, ca=target.ca,
            )  # fmt: skip
        return await h2load(
            target.address, call.path, call.body_file, metadata=call.metadata, clients=profile.clients,
            streams=profile.streams, requests=requests, response_frame_bytes=call.response_frame_bytes,
            tls=target.ca is not None,
        )  # fmt: skip

    if warmup:
        await load(warmup)
    before = {role: server.cpu_seconds() for role, server in target.servers.items()}
    result = await load(profile.requests)
    after = {role: server.cpu_seconds() for role, server in target.servers.items()}
    calls = max(result.answered, 1)
    return {
        **result.to_json(),
        "cpu_us_per_call": {role: (after[role] - before[role]) / calls * 1e6 for role in target.servers},
    }


def best_of(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each figure at its best over ``rounds`` (throughput up, latency and CPU down)."""
    best = dict(max(rounds, key=lambda r: r["per_second"]))
    best["mean_latency_us"] = min(r["mean_latency_us"] for r in rounds)
    best["cpu_us_per_call"] = {
        role: min(r["cpu_us_per_call"][role] for r in rounds) for role in rounds[0]["cpu_us_per_call"]
    }
    best["answered"] = min(r["answered"] for r in rounds)
    best["requests"] = max(r["requests"] for r in rounds)
    return best


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls of ``fn`` per second, over batches of 1000 for about ``seconds``."""
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(1000):
            fn()
        done += 1000
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - started)


async def micro(seconds: float = 0.5, hops: int = 20000) -> dict[str, Any]:
    """(c) cached version resolutions per second and (d) the time of one transformer hop.

    Both on the users module, whose 2025-06-01 version has real transformers back to 2025-01-15.
    """
    users = VersionCatalog.from_module_dir("users", ROOT / "modules" / "users", {"stable": "2025-06-01"})
    table = users.table
    resolve: dict[str, float] = {}
    for header in ("2025-01-15", "stable", "2025-03-01T12:00:00Z", None):
        resolve[header or "(none)"] = _rate(lambda h=header: table.resolve(h), seconds)  # type: ignore[misc]
    route = users.route("2025-01-15", ("2025-06-01",))
    assert route is not None and len(route[1]) == 1, "users 2025-01-15 should be one hop from 2025-06-01"
    steps = route[1]
    user = {
        "id": "5f0c", "given_name": "Grace", "family_name": "Brewster Hopper",
        "email": "grace@example.com", "created_at": "2025-06-01T12:00:00+00:00",
    }  # fmt: skip
    create = {"name": "Grace Brewster Hopper", "email": "grace@example.com"}
    hop_us: dict[str, float] = {}
    for label, method, direction, data in (
        ("GetUser response, backward", "GetUser", "backward", user),
        ("CreateUser request, forward", "CreateUser", "forward", create),
    ):
        started = time.perf_counter()
        for _ in range(hops):
            await run_chain(steps, method, data, direction=direction)
        hop_us[label] = (time.perf_counter() - started) / hops * 1e6
    return {"resolve_per_second": resolve, "transformer_hop_us": hop_us}


@dataclass(frozen=True)
class Goal:
    """One target of the benchmark, and how its figure comes out of a run's figures."""

    measure: str
    target: str
    compute: Callable[[dict[str, Any]], float | None]
    ok: Callable[[float], bool]
    unit: str = ""


def _figure(figures: dict[str, Any], name: str, profile: str) -> dict[str, Any] | None:
    entry: dict[str, Any] | None = figures["targets"].get(name, {}).get(profile)
    return entry


def _throughput(figures: dict[str, Any], name: str, profile: str = "c4/m10") -> float | None:
    entry = _figure(figures, name, profile)
    return None if entry is None else float(entry["per_second"])


def _cpu(figures: dict[str, Any], name: str, role: str, profile: str = "c4/m10") -> float | None:
    entry = _figure(figures, name, profile)
    return None if entry is None else float(entry["cpu_us_per_call"][role])


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _streamed(figures: dict[str, Any], name: str, profile: str = "c1") -> float | None:
    """Messages per second of a streaming target (:mod:`bench.streams`), None when not measured."""
    entry = figures.get("streams", {}).get(name, {}).get(profile)
    return None if entry is None else float(entry["per_second"])


def worker_reference(figures: dict[str, Any]) -> str:
    """The path that measures the worker alone: ``direct`` when it could be measured; since
    workers take mutual TLS only (and h2load presents no client certificate), nginx in front of
    it, which does."""
    return "direct" if "direct" in figures["targets"] else "nginx"


def _added_latency(figures: dict[str, Any]) -> float | None:
    gateway, direct = _figure(figures, "gateway", "c1/m1"), _figure(figures, worker_reference(figures), "c1/m1")
    if gateway is None or direct is None:
        return None
    return float(gateway["mean_latency_us"] - direct["mean_latency_us"])


def _mtls_share(figures: dict[str, Any], lane_profile: str = "c40", profile: str = "c4/m10") -> float | None:
    """The share of the gateway's CPU per call that internal mutual TLS costs: what the lane's
    TLS adds on the client's side (measured at the same calls in flight: 40 for c4/m10, one for
    c1/m1), over the gateway's whole CPU per call. The gateway is CPU-bound at c4/m10, so its
    throughput falls in that proportion."""
    lane = figures.get("lane_tls", {}).get(lane_profile)
    gateway = _cpu(figures, "gateway", "gateway", profile)
    if lane is None or gateway is None or gateway <= 0:
        return None
    return max(0.0, float(lane["added_cpu_us_per_call"]["client"])) / gateway


GOALS = (
    Goal("gateway ÷ worker throughput (c4/m10)", "≥ 0.60",
         lambda f: _ratio(_throughput(f, "gateway"), _throughput(f, worker_reference(f))), lambda r: r >= 0.60),
    Goal("worker ÷ bare reference throughput (c4/m10)", "≥ 0.70",
         lambda f: _ratio(_throughput(f, worker_reference(f)), _throughput(f, "bare")), lambda r: r >= 0.70),
    Goal("worker ÷ bare, like for like: both mutual TLS behind nginx (c4/m10)", "(reported)",
         lambda f: _ratio(_throughput(f, "nginx"), _throughput(f, "nginx_bare")), lambda r: True),
    Goal("worker CPU/call ÷ bare CPU/call, like for like (c4/m10)", "(reported)",
         lambda f: _ratio(_cpu(f, "nginx", "worker"), _cpu(f, "nginx_bare", "server")), lambda r: True),
    Goal("gateway ÷ bare reference throughput (c4/m10)", "≥ 0.75",
         lambda f: _ratio(_throughput(f, "gateway"), _throughput(f, "bare")), lambda r: r >= 0.75),
    Goal("gateway CPU/call ÷ bare reference CPU/call (c4/m10)", "≤ 1.2",
         lambda f: _ratio(_cpu(f, "gateway", "gateway"), _cpu(f, "bare", "server")), lambda r: r <= 1.2),
    Goal("floor of the design: lane pass-through CPU/call ÷ bare (c4/m10)", "(reported)",
         lambda f: _ratio(_cpu(f, "lane_proxy", "proxy"), _cpu(f, "bare", "server")), lambda r: True),
    Goal("floor of the design: lane pass-through ÷ bare throughput (c4/m10)", "(reported)",
         lambda f: _ratio(_throughput(f, "lane_proxy"), _throughput(f, "bare")), lambda r: True),
    Goal("the gateway's policy chain: gateway CPU/call minus lane pass-through's (c4/m10)", "(reported)",
         lambda f: _difference(_cpu(f, "gateway", "gateway"), _cpu(f, "lane_proxy", "proxy")), lambda v: True, " µs"),
    Goal("gateway added mean latency (c1/m1)", "≤ 250 µs", _added_latency, lambda v: v <= 250, " µs"),
    Goal("cached version resolutions per second", "≥ 500k/s",
         lambda f: min(f["micro"]["resolve_per_second"].values()), lambda v: v >= 500_000, "/s"),
    Goal("one transformer hop", "≤ 50 µs",
         lambda f: max(f["micro"]["transformer_hop_us"].values()), lambda v: v <= 50, " µs"),
    Goal("embedded ÷ worker throughput (c4/m10)", "≥ 1.0",
         lambda f: _ratio(_throughput(f, "embedded"), _throughput(f, worker_reference(f))), lambda r: r >= 1.0),
    Goal("internal mTLS share of gateway throughput (c4/m10)", "≤ 0.15", _mtls_share, lambda r: r <= 0.15),
    Goal("internal mTLS share of gateway CPU per call (c1/m1)", "≤ 0.15",
         lambda f: _mtls_share(f, "c1", "c1/m1"), lambda r: r <= 0.15),
    Goal("edge TLS gateway ÷ plaintext-edge gateway throughput (c4/m10)", "(reported)",
         lambda f: _ratio(_throughput(f, "gateway_edge"), _throughput(f, "gateway")), lambda r: True),
    Goal("server streaming: gateway ÷ bare grpc.aio messages/s (c1)", "≥ 0.5",
         lambda f: _ratio(_streamed(f, "gateway"), _streamed(f, "bare_stream")), lambda r: r >= 0.5),
)  # fmt: skip
"""The targets, each computed from one run: the gateway's throughput and CPU against the bare
server, and embedded against the worker, are the call contract's goals (tighter than the first
ones: ≤ 1.5 for the CPU, ≥ 0.9 for embedded). "Worker" is the worker called
directly when that can be measured, else through nginx (see :func:`worker_reference`)."""


def _environment() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
    }


async def run(
    profiles: Sequence[Profile] = FULL,
    *,
    rounds: int = 3,
    nginx: bool = True,
    embedded: bool = True,
    warmup: int = 500,
    verify_calls: int = 200,
    driver: str = "h2load",
    log: Callable[[str], None] = print,
    unary: bool = True,
    streams: bool = True,
) -> dict[str, Any]:
    """Start the topology, verify every target, measure each at each profile; return the figures.

    Raises ``AssertionError`` when a target answers a call wrongly, and ``RuntimeError`` when a
    measured run brings back fewer correct answers than it sent calls.
    """
    started = time.time()
    figures: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "environment": _environment(),
        "profiles": [asdict(p) for p in profiles],
        "rounds": rounds,
        "driver": driver,
        "targets": {},
        "all_rounds": {},
        "verified": {},
    }
    async with topology(nginx=nginx, embedded=embedded) as top:
        figures["skipped"] = dict(top.skipped)
        names = [name for name in TARGET_ORDER if name in top.targets] if unary else []
        for name in names:
            target = top.targets[name]
            figures["verified"][name] = await verify(
                target.address, top.call.path, top.call.request, top.call.response,
                metadata=top.call.metadata, calls=verify_calls, ca=target.ca,
            )  # fmt: skip
        measured: dict[str, dict[str, list[dict[str, Any]]]] = {n: {p.name: [] for p in profiles} for n in names}
        for index in range(rounds if names else 0):
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                for profile in profiles:
                    log(f"round {index + 1}/{rounds}: {name} at {profile.name} ({profile.requests} calls)")
                    result = await measure_target(
                        top, top.targets[name], profile, warmup=warmup if index == 0 else 0, driver=driver
                    )
                    if result["answered"] != result["requests"]:
                        raise RuntimeError(
                            f"{name} at {profile.name}: {result['answered']} of {result['requests']} calls "
                            "came back with the expected response"
                        )
                    measured[name][profile.name].append(result)
        figures["all_rounds"] = measured
        figures["targets"] = {
            name: {profile: best_of(results) for profile, results in by_profile.items()}
            for name, by_profile in measured.items()
        }
        if streams:
            stream_profiles = streams_module.SMOKE if profiles is SMOKE else streams_module.FULL
            figures["streams"] = await streams_module.measure_streams(
                top, rounds=rounds, profiles=stream_profiles, log=log
            )
    figures["micro"] = await micro()
    log("measuring mutual TLS on the lane against plaintext (bench.lane_tls)")
    figures["lane_tls"] = await lane_tls.run(
        ((1, 300), (40, 2000)) if profiles is SMOKE else lane_tls.PROFILES, rounds=1 if profiles is SMOKE else rounds
    )
    figures["goals"] = [
        {"measure": g.measure, "target": g.target, "value": value, "unit": g.unit,
         "met": None if value is None else g.ok(value)}
        for g in GOALS
        for value in [g.compute(figures)]
    ]
    figures["seconds"] = time.time() - started
    return figures


def write_json(figures: dict[str, Any], directory: Path) -> Path:
    """Write ``<UTC timestamp>.json`` and ``latest.json`` under ``directory``; returns the first."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = directory / f"{stamp}.json"
    text = json.dumps(figures, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path
