"""``modrpc``: one entry point, one sub-command per job.

Arguments are declared here; each sub-command's code lives in its own module and is imported
only when it runs, so ``modrpc gen`` does not pay for importing the gateway.

Every command but ``new`` works on a project (:mod:`runtime.project`): the one named by
``--project``, else the nearest folder at or above the working directory holding
``modrpc.toml``. Paths given on the command line are taken from where the command was typed;
the command itself then runs from the project root, with the project's code imported first.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modrpc", description="modrpc: typed modules over gRPC.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--project", type=Path, default=None, metavar="DIR",
            help="the project (a folder with modrpc.toml; default: the nearest one at or above .)",
        )  # fmt: skip
        return p

    for name, help_text in (
        ("up", "Run the gateway and one worker per module, on the configured backends."),
        ("gateway", "Run the gateway alone; it finds workers through the manifest store."),
    ):
        p = command(name, help_text)
        p.add_argument("--port", type=int, default=None, help="gateway port (default: 50051)")
        p.add_argument("--host", default=None, help="listen address (default: 127.0.0.1)")
        p.add_argument("--modules", default=None, help="modules folder (default: modules)")
        p.add_argument("--config", type=Path, default=None, help="config file (default: ./modrpc.toml)")
        if name == "up":
            p.add_argument(
                "--embedded",
                action="store_true",
                help="serve every module inside the gateway's process, reached without a socket",
            )
            p.add_argument(
                "--reload",
                action="store_true",
                help="watch the modules: on a change run modrpc gen and restart the workers affected",
            )
    p = command("worker", "Serve every version of one module that its code can serve.")
    p.add_argument("module", help="module name (a folder under the modules folder)")
    p.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    p.add_argument("--host", default=None, help="listen address (default: 127.0.0.1)")
    p.add_argument("--modules", default=None, help="modules folder (default: modules)")
    p.add_argument("--config", type=Path, default=None, help="config file (default: ./modrpc.toml)")

    p = command("gen", "Record schema versions and write proto/ and gen/ (or --check them).")
    p.add_argument("--root", dest="project", type=Path, help=argparse.SUPPRESS)  # the old name
    p.add_argument("--modules", default=None, help="modules folder (default: modules_dir, modules)")
    p.add_argument("--check", action="store_true", help="fail, naming each stale file, instead of writing")
    p.add_argument("--date", help="version id for a newly recorded version (default: today, UTC)")

    p = command("versions", "List a module's versions, labels and which steps are breaking.")
    p.add_argument("module", help="module name")
    p.add_argument("--root", dest="project", type=Path, help=argparse.SUPPRESS)  # the old name
    p.add_argument("--modules", default=None, help="modules folder (default: modules_dir, modules)")
    # Any of these works against the manifest store (lifecycle) instead of the module folder.
    p.add_argument("--store", metavar="URL", default=None,
                   help="manifest store to manage the lifecycle in (default: store_url from config)")
    p.add_argument("--retire", action="store_true",
                   help="record hot/warm/cold states and retire idle versions")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be retired and why; change nothing")
    p.add_argument("--keep", action="append", default=[], metavar="VERSION",
                   help="never retire VERSION (restores it if retired); repeatable")
    p.add_argument("--unkeep", action="append", default=[], metavar="VERSION",
                   help="drop the manual override (keep or retire) of VERSION; repeatable")
    p.add_argument("--retire-version", action="append", default=[], metavar="VERSION",
                   help="retire VERSION at the next --retire, even if in use; repeatable")

    p = command("config", "Print every setting in effect and where it came from (default, file, environment).")
    p.add_argument("--config", type=Path, default=None, help="config file (default: ./modrpc.toml)")
    p.add_argument("--markdown", action="store_true", help="print every setting and its default as the README's table")

    p = command("new", "Start a project (modrpc new DIR) or add a module to this one (modrpc new module NAME).")
    p.add_argument("target", nargs="+", metavar="DIR | module NAME", help="a new folder, or: module NAME")
    p.add_argument("--modules", default=None, help="for a module: the modules folder (default: modules)")

    p = command("token", "Print a development JWT that the running dev config accepts.")
    p.add_argument("--subject", required=True, help="the token's subject (sub claim)")
    p.add_argument("--roles", default="", help="comma-separated roles, e.g. users:read,users:write")
    p.add_argument("--ttl", default="1h", help="lifetime: seconds or a number with s/m/h/d (default 1h)")
    p.add_argument("--config", type=Path, default=None, help="config file (default: ./modrpc.toml)")

    p = command("certs", "Make a CA and issue the certificates of the internal mutual TLS (and the edge).")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("init", help="create a CA (ca.crt, ca.key) in --dir")
    a.add_argument("--dir", default=".modrpc/tls", help="where the CA goes (default: .modrpc/tls)")
    a.add_argument("--name", default="modrpc CA", help="the CA's common name")
    a.add_argument("--days", type=int, default=3650, help="validity in days (default: 3650)")
    a.add_argument("--force", action="store_true", help="replace an existing CA")
    a = actions.add_parser("issue", help="issue IDENTITY's certificate and key from the CA in --ca")
    a.add_argument("identity", help="gateway, hub, module:<name> or client:<name>")
    a.add_argument("--ca", default=".modrpc/tls", help="folder holding ca.crt and ca.key (default: .modrpc/tls)")
    a.add_argument("--out", default=".modrpc/tls", help="folder to write into (default: .modrpc/tls)")
    a.add_argument("--host", action="append", default=[], help="a DNS name or IP address to add; repeatable")
    a.add_argument("--days", type=int, default=365, help="validity in days (default: 365)")
    a.add_argument("--force", action="store_true", help="replace an existing certificate")
    a = actions.add_parser("show", help="list the certificates in --dir, their identities and expiry")
    a.add_argument("--dir", default=".modrpc/tls", help="folder to look in (default: .modrpc/tls)")
    return parser


_RUNNERS = {
    "up": "runtime.cli._serve",
    "gateway": "runtime.cli._serve",
    "worker": "runtime.cli._serve",
    "gen": "runtime.cli._gen",
    "versions": "runtime.cli._gen",
    "token": "runtime.cli._token",
    "certs": "runtime.cli._certs",
    "new": "runtime.cli._new",
    "config": "runtime.cli._config",
}


_PROJECT_OPTIONAL = frozenset({"certs", "gateway", "token", "versions"})
"""Commands that can work without a project (certificates, the gateway, a token, the version
lifecycle in the store): outside one they run from the working directory."""

_PATH_ARGUMENTS = ("modules", "config", "dir", "ca", "out")
"""Arguments naming files or folders: relative to where the command was typed, not the root."""


def _enter_project(args: argparse.Namespace) -> str | None:
    """Find the project, anchor the path arguments, and move into it; an error message or None."""
    from runtime.project import ProjectError, find_project

    for name in _PATH_ARGUMENTS:
        value = getattr(args, name, None)
        if value is not None:
            setattr(args, name, Path(value).expanduser().resolve())
    try:
        project = find_project(explicit=args.project)
    except ProjectError as exc:
        if args.command in _PROJECT_OPTIONAL and args.project is None:
            return None
        return str(exc)
    project.enter()
    args.project = project.root
    return None


def _warn_unknown_env() -> None:
    """Name each ``MODRPC_*`` variable that is no setting: it would be ignored silently."""
    from runtime.config import unknown_env

    for name, closest in unknown_env():
        hint = f"; did you mean {closest}?" if closest else "; `modrpc config` lists the settings"
        print(f"modrpc: warning: {name} is not a setting and is ignored{hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Called in process (tests, embedding), the caller's working directory and import path
    # come back as they were.
    cwd, path = os.getcwd(), list(sys.path)
    try:
        problem = None if args.command == "new" else _enter_project(args)
        if problem is not None:
            print(f"modrpc {args.command}: {problem}", file=sys.stderr)
            return 2
        _warn_unknown_env()
        run = importlib.import_module(_RUNNERS[args.command]).run
        try:
            code: int = run(args)
        except KeyboardInterrupt:
            return 130
        return code
    finally:
        os.chdir(cwd)
        sys.path[:] = path


if __name__ == "__main__":
    sys.exit(main())
