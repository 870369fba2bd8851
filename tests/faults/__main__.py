"""``python -m tests.faults [--short] [--keep DIR]``: play the fault scenarios, print the table."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from tests.faults.scenarios import FULL, SHORT, Row, run, table
from tests.faults.services import missing_tools


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the short version make test runs")
    parser.add_argument("--only", action="append", default=[], help="scenario function name (repeatable)")
    parser.add_argument("--keep", type=Path, help="keep logs and data in this folder")
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        print(f"the fault suite needs {', '.join(missing)} on PATH", file=sys.stderr)
        return 2
    scenarios = SHORT if args.short else FULL
    if args.only:
        scenarios = [(s, n) for s, n in scenarios if s.__name__ in args.only]

    def report(row: Row) -> None:
        print(f"{row.scenario}: {row.calls} calls, {row.failed} failed, {row.published} published, "
              f"{row.delivered} delivered{'' if row.ok else '  <-- FAILED'}", flush=True)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="modrpc-faults-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        print(f"logs and data in {root}", flush=True)
        rows = asyncio.run(run(root, scenarios, report=report))
    print()
    print(table(rows))
    print(f"\n{len(rows)} scenarios in {time.monotonic() - started:.0f}s")
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
