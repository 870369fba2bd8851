"""A run's figures as markdown: the paths measured, the targets, the micro-benchmarks."""

from __future__ import annotations

from typing import Any

__all__ = ["markdown"]

_WORKER = "worker"
"""Stands for the path measuring the worker alone (direct, or through nginx)."""

_PATHS = (
    ("bare", "bare grpc.aio echo (reference)", "bare", None),
    ("direct", "worker, called directly", _WORKER, "worker"),
    ("gateway", "gateway → worker (lane, mTLS)", _WORKER, "gateway"),
    ("gateway_edge", "TLS edge gateway → worker (lane, mTLS)", _WORKER, "gateway"),
    ("gateway_grpc", "gateway → worker over gRPC (lane off, mTLS)", _WORKER, "gateway"),
    ("embedded", "gateway with the module in process (embedded)", _WORKER, "gateway"),
    ("lane_proxy", "lane pass-through → worker (grpc.aio + the lane, mTLS; no policy)", _WORKER, "proxy"),
    ("proxy", "naive grpc.aio pass-through → worker (mTLS)", _WORKER, "proxy"),
    ("nginx", "nginx grpc_pass → worker (mTLS)", _WORKER, "nginx"),
    ("nginx_bare", "nginx grpc_pass → bare echo (mTLS, the worker's certificate)", "bare", "nginx"),
    ("proxy_bare", "naive grpc.aio pass-through → bare echo", "bare", "proxy"),
)
"""Target, label, what its throughput is compared with, and the process in front (its CPU is
compared with the bare server's)."""


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _cpu(entry: dict[str, Any]) -> str:
    return " + ".join(f"{role} {_n(us)}" for role, us in entry["cpu_us_per_call"].items())


def paths_table(figures: dict[str, Any]) -> str:
    profiles = [p["name"] for p in figures["profiles"]]
    heavy = profiles[-1]
    targets = figures["targets"]
    bare = targets.get("bare", {}).get(heavy)
    header = "| path | " + " | ".join(f"{p} calls/s | {p} mean µs" for p in profiles)
    header += f" | CPU µs per call ({heavy}) | throughput ÷ backend called directly | front CPU ÷ bare CPU |"
    lines = [header, "|---|" + "---:|" * (2 * len(profiles) + 3)]
    for name, label, backend, front in _PATHS:
        by_profile = targets.get(name)
        if by_profile is None:
            why = figures.get("skipped", {}).get(name, "not measured")
            lines.append(f"| {label} ({why}) | " + " | ".join("-" for _ in range(2 * len(profiles) + 3)) + " |")
            continue
        cells = []
        for profile in profiles:
            entry = by_profile[profile]
            cells += [_n(entry["per_second"]), _n(entry["mean_latency_us"])]
        entry = by_profile[heavy]
        if backend == _WORKER:
            backend = "direct" if "direct" in targets else "nginx"
        base = targets.get(backend, {}).get(heavy)
        ratio = "-" if base is None else f"{entry['per_second'] / base['per_second']:.2f} ({backend})"
        cpu_ratio = "-"
        if front is not None and bare is not None:
            cpu_ratio = f"{entry['cpu_us_per_call'][front] / bare['cpu_us_per_call']['server']:.2f}"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_cpu(entry)} | {ratio} | {cpu_ratio} |")
    return "\n".join(lines)


_STREAM_PATHS = (
    ("bare_stream", "bare grpc.aio streaming server (reference)"),
    ("direct", "worker, called directly"),
    ("gateway", "gateway → worker (lane)"),
    ("gateway_grpc", "gateway → worker over gRPC (lane off)"),
)


def streams_table(figures: dict[str, Any]) -> str:
    """Server-streaming messages per second on each path, and each ÷ the bare reference."""
    streams = figures.get("streams") or {}
    profiles = sorted({p for by in streams.values() for p in by})
    bare = streams.get("bare_stream", {})
    header = "| server streaming (echo.EchoStream) | " + " | ".join(
        f"{p} messages/s | {p} ÷ bare | {p} CPU µs per message" for p in profiles
    ) + " |"
    lines = [header, "|---|" + "---:|" * (3 * len(profiles))]
    for name, label in _STREAM_PATHS:
        by_profile = streams.get(name)
        if by_profile is None:
            continue
        cells = []
        for profile in profiles:
            entry = by_profile[profile]
            base = bare.get(profile)
            ratio = "-" if base is None else f"{entry['per_second'] / base['per_second']:.2f}"
            cpu = " + ".join(f"{role} {us:.1f}" for role, us in entry["cpu_us_per_message"].items())
            cells += [_n(entry["per_second"]), ratio, cpu]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals_table(figures: dict[str, Any]) -> str:
    lines = ["| measure | value | target | met |", "|---|---:|---:|:---:|"]
    for goal in figures["goals"]:
        value = goal["value"]
        if value is None:
            shown, met = "not measured", "-"
        else:
            shown = (_n(value) if abs(value) >= 1000 else f"{value:.3f}" if abs(value) < 0.1 else f"{value:.2f}")
            shown += goal.get("unit", "")
            met = "yes" if goal["met"] else "**no**"
        lines.append(f"| {goal['measure']} | {shown} | {goal['target']} | {met} |")
    return "\n".join(lines)


def micro_table(figures: dict[str, Any]) -> str:
    micro = figures["micro"]
    lines = ["| micro-benchmark | value |", "|---|---:|"]
    for header, rate in micro["resolve_per_second"].items():
        lines.append(f"| cached resolution of x-api-version {header} | {_n(rate)}/s |")
    for label, us in micro["transformer_hop_us"].items():
        lines.append(f"| one transformer hop: users {label} | {us:.1f} µs |")
    return "\n".join(lines)


def lane_tls_table(figures: dict[str, Any]) -> str:
    lane = figures.get("lane_tls")
    if not lane:
        return ""
    lines = [
        "| lane hop (echo) | calls in flight | plaintext calls/s | mTLS calls/s | CPU µs per call, plaintext (client + server) | mTLS added (client + server) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, entry in lane.items():
        plain, secure, added = entry["best"]["plaintext"], entry["best"]["mtls"], entry["added_cpu_us_per_call"]
        lines.append(
            f"| lane | {name[1:]} | {_n(plain['per_second'])} | {_n(secure['per_second'])} | "
            f"{plain['client_cpu_us_per_call']:.1f} + {plain['server_cpu_us_per_call']:.1f} | "
            f"{added['client']:+.1f} + {added['server']:+.1f} |"
        )
    return "\n".join(lines)


BUSY_LOAD_PER_CPU = 0.5
"""A one-minute load average above this per CPU at the start means something else was running."""


def machine_busy(env: dict[str, Any]) -> bool:
    """Whether the machine was busy when the run started (others' work skews every figure)."""
    return float(env["load_average"][0]) > BUSY_LOAD_PER_CPU * max(1, int(env["cpus"]))


def busy_warning(env: dict[str, Any]) -> list[str]:
    if not machine_busy(env):
        return [""]
    return [
        "",
        f"**The machine was busy** (load {env['load_average'][0]:.2f} on {env['cpus']} CPUs at the "
        "start): these figures are noisy and only worse than a quiet run's; compare ratios measured "
        "on a quiet machine.",
        "",
    ]


def markdown(figures: dict[str, Any], fabric_table: str | None = None) -> str:
    """The whole report: paths, targets, micro-benchmarks and (when given) the fabric's table."""
    env = figures["environment"]
    parts = [
        f"Run of {figures['started_at']}: {env['cpus']} CPUs, load average "
        f"{', '.join(f'{x:.2f}' for x in env['load_average'])} at the start, Python {env['python']}, "
        f"grpcio {env['grpcio']}; best of {figures['rounds']} rounds per figure.",
        "",
        *busy_warning(env),
        paths_table(figures),
        "",
    ]
    if figures.get("streams"):
        parts += [streams_table(figures), ""]
    parts += [
        goals_table(figures),
        "",
        micro_table(figures),
        "",
        lane_tls_table(figures),
    ]
    if fabric_table:
        parts += ["", "Queue fabric (`bench.fabric`):", "", fabric_table]
    return "\n".join(parts)
