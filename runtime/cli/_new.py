"""``modrpc new DIR`` (a project) and ``modrpc new module NAME`` (a module of this project).

After writing the files it runs ``modrpc gen`` in a process of its own, so the new module has
its first version recorded (labelled ``stable``) and its generated code, and is ready for
``modrpc up`` and ``pytest`` as it is.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from runtime.project import Project, ProjectError, find_project, new_module, new_project

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    target: list[str] = args.target
    try:
        if target[0] == "module" and len(target) == 2:
            project = find_project(explicit=args.project)
            modules = Path(args.modules).resolve() if args.modules else None
            created = new_module(project, target[1], modules)
            what = f"module {target[1]}"
        elif len(target) == 1:
            project, created = new_project(Path(target[0]))
            what = f"project {project.root}"
        else:
            print("modrpc new: expected `modrpc new DIR` or `modrpc new module NAME`", file=sys.stderr)
            return 2
    except ProjectError as exc:
        print(f"modrpc new: {exc}", file=sys.stderr)
        return 2
    for path in created:
        print(f"wrote {_shown(path, project)}")
    code = _gen(project, args.modules)
    if code != 0:
        print(f"modrpc new: created {what}, but `modrpc gen` failed (above); fix it and run it again", file=sys.stderr)
        return code
    print(f"created {what}")
    if what.startswith("project"):
        print(f"next: cd {target[0]} && pytest && modrpc up --reload")
    return 0


def _shown(path: Path, project: Project) -> str:
    try:
        return str(path.relative_to(project.root))
    except ValueError:
        return str(path)


def _gen(project: Project, modules: str | None) -> int:
    cmd = [sys.executable, "-m", "runtime.cli", "gen", "--project", str(project.root)]
    if modules:
        cmd += ["--modules", str(Path(modules).resolve())]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the new project's code, not whatever the caller had on the path
    return subprocess.run(cmd, cwd=project.root, env=env, check=False).returncode
