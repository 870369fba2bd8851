"""``make bench`` (``python -m bench``): the gateway's and worker's costs, and the fabric's.

Prints a markdown table and writes the figures to ``bench/results/<UTC timestamp>.json`` and
``bench/results/latest.json``. What is measured and how: :mod:`bench.topology` (the servers),
:mod:`bench.load` (h2load and the correctness check), :mod:`bench.measure` (rounds, CPU per
call, the targets), and :mod:`bench.fabric` (the queue fabric, run at the end).

    python -m bench                 # the full run, a few minutes
    python -m bench --rounds 1      # quicker, noisier
    python -m bench --smoke         # a few hundred calls: checks the harness, means nothing
    python -m bench --streams-only  # server-streaming throughput alone (bench.streams)
    python -m bench --no-streams    # unary paths only
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.load import h2load_binary
from bench.measure import FULL, SMOKE, run, write_json
from bench.report import BUSY_LOAD_PER_CPU, markdown

RESULTS = Path(__file__).resolve().parent / "results"


def _apt_install(package: str) -> bool:
    """Install a Debian package when running as root with apt-get; False when that cannot be done."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return False
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["apt-get", "update", "-qq"], check=False, **quiet)  # type: ignore[call-overload]
    done = subprocess.run(["apt-get", "install", "-y", "-qq", package], check=False, **quiet)  # type: ignore[call-overload]
    return bool(done.returncode == 0)


def _ensure_tools(want_nginx: bool) -> bool:
    """h2load is required (``make bench`` installs it); nginx is optional. True when nginx is there."""
    if h2load_binary() is None and not _apt_install("nghttp2-client"):
        sys.exit("bench: h2load is missing; install Debian's nghttp2-client")
    if not want_nginx:
        return False
    if shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin"):
        return True
    print("bench: nginx is missing; trying apt-get install nginx-light", file=sys.stderr)
    return _apt_install("nginx-light") or _apt_install("nginx")


async def _fabric() -> tuple[dict[str, Any] | None, str | None]:
    from bench import fabric

    try:
        figures = await fabric.run()
    except Exception as exc:  # the fabric's own benchmark; a failure there must not lose ours
        return {"error": f"{type(exc).__name__}: {exc}"}, None
    return figures, fabric.table(figures)


async def main(args: argparse.Namespace) -> int:
    nginx = _ensure_tools(not args.no_nginx)
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > BUSY_LOAD_PER_CPU * cpus:
        print(f"bench: the machine is busy (load {load:.2f} on {cpus} CPUs): the figures will be noisy",
              file=sys.stderr, flush=True)
    figures = await run(
        SMOKE if args.smoke else FULL,
        rounds=args.rounds,
        nginx=nginx,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        unary=not args.streams_only,
        streams=not args.no_streams,
    )
    if not nginx:
        figures["skipped"]["nginx"] = "not requested" if args.no_nginx else "nginx could not be installed"
    fabric_table = None
    if not args.no_fabric:
        print("measuring the queue fabric (bench.fabric)", file=sys.stderr, flush=True)
        figures["fabric"], fabric_table = await _fabric()
    print(markdown(figures, fabric_table))
    path = write_json(figures, args.out)
    print(f"\nfigures written to {path} and {args.out / 'latest.json'}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="modrpc benchmarks (not tests).")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target; each figure keeps its best")
    parser.add_argument("--smoke", action="store_true", help="a few hundred calls per target, to check the harness")
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx grpc_pass path")
    parser.add_argument("--no-fabric", action="store_true", help="skip the queue fabric benchmark")
    streams = parser.add_mutually_exclusive_group()
    streams.add_argument("--no-streams", action="store_true", help="skip server-streaming throughput")
    streams.add_argument("--streams-only", action="store_true", help="measure server-streaming throughput alone")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes (default bench/results)")
    return parser


if __name__ == "__main__":
    sys.exit(asyncio.run(main(_parser().parse_args())))
