"""``modrpc``: one entry point, one sub-command per job.

Each sub-command lives in its own module and is imported only when it runs, so ``modrpc gen``
does not pay for importing the gateway.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

_COMMANDS = {
    "up": ("runtime.cli._serve", "Run the gateway and one worker per module (embedded backends)."),
    "gateway": ("runtime.cli._serve", "Run the gateway alone; it finds workers through the store."),
    "worker": ("runtime.cli._serve", "Serve every active version of one module."),
    "gen": ("runtime.cli._gen", "Record schema versions and write proto/ and gen/ (or --check)."),
    "token": ("runtime.cli._token", "Print a development JWT that the running dev config accepts."),
    "versions": ("runtime.cli._gen", "List a module's versions, labels and breaking steps."),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modrpc", description="modrpc: typed modules over gRPC.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(name, p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    module, _ = _COMMANDS[args.command]
    run = importlib.import_module(module).run
    try:
        code: int = run(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
