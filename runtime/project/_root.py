"""Finding the project a command works on, and making its code importable.

A modrpc project is a folder holding ``modrpc.toml``, with its modules under ``modules/`` and
the generated ``gen/`` and ``proto/`` beside them. Commands find it the way git finds a
repository: from the working directory upwards, unless ``--project DIR`` names it. The project
root then goes first on ``sys.path``, so ``modules.<name>`` and ``gen.<name>`` are that
project's, never a same-named package installed elsewhere.

    >>> project = find_project(Path("demo/modules/hello"))      # doctest: +SKIP
    >>> project.root                                           # doctest: +SKIP
    PosixPath('/home/ada/demo')
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PROJECT_FILE", "Project", "ProjectError", "find_project"]

PROJECT_FILE = "modrpc.toml"
"""The file that makes a folder a modrpc project (and holds its settings)."""


class ProjectError(ValueError):
    """No project where one was looked for. Expected; the message says where and what to do."""


@dataclass(frozen=True)
class Project:
    """One modrpc project: a folder with ``modrpc.toml``."""

    root: Path
    """The folder holding ``modrpc.toml`` (absolute)."""

    @property
    def config_file(self) -> Path:
        return self.root / PROJECT_FILE

    @property
    def modules_dir(self) -> Path:
        """The default modules folder; ``modules_dir`` in the settings or ``--modules`` move it."""
        return self.root / "modules"

    def enter(self) -> None:
        """Work from the project root, with its code importable ahead of everything else.

        Relative paths in the settings (the store, the audit file, secrets) are then relative
        to the root, wherever in the project the command was started.
        """
        os.chdir(self.root)
        root = str(self.root)
        if root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)


def find_project(start: Path | None = None, *, explicit: Path | None = None) -> Project:
    """The project named by ``explicit`` (``--project``), else the nearest one above ``start``.

    Raises :class:`ProjectError` naming the folder when there is none.
    """
    if explicit is not None:
        root = explicit.expanduser().resolve()
        if not (root / PROJECT_FILE).is_file():
            raise ProjectError(
                f"{root} is not a modrpc project: it has no {PROJECT_FILE} "
                f"(`modrpc new {explicit}` starts one)"
            )
        return Project(root)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return Project(folder)
    raise ProjectError(
        f"no modrpc project here: neither {here} nor any folder above it has a {PROJECT_FILE}. "
        "Run the command inside a project, pass --project DIR, or start one with `modrpc new DIR`"
    )
