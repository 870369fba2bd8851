"""Where a function lives: a source file relative to its import root, and a line number.

Manifests record hook and handler locations, and their content hash must not depend on the
checkout directory, so a path is given relative to the folder its top-level package sits in
(for ``modules.users.hooks`` that is the repository root): ``modules/users/hooks.py``.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

__all__ = ["import_root", "relative_source", "source_line", "source_location"]


def import_root(module_name: str) -> Path | None:
    """The folder holding the top-level package of ``module_name``, if it is imported."""
    top = sys.modules.get(module_name.partition(".")[0])
    if top is None:
        return None
    paths = list(getattr(top, "__path__", ()) or ())
    if paths:
        return Path(paths[0]).resolve().parent
    file = getattr(top, "__file__", None)
    return Path(file).resolve().parent if file else None


def relative_source(file: str | Path, module_name: str) -> str:
    """``file`` relative to the import root of ``module_name`` (POSIX separators), else as is."""
    path = Path(file).resolve()
    root = import_root(module_name)
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def source_line(obj: Any) -> int:
    """The line where ``obj`` is defined (its ``def`` line, or its first decorator), or 0."""
    target = inspect.unwrap(obj) if callable(obj) else obj
    code = getattr(target, "__code__", None)
    if code is not None:
        return int(code.co_firstlineno)
    try:
        return inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return 0


def source_location(obj: Any) -> tuple[str, int]:
    """(relative file, line) of a function; ``("<unknown>", 0)`` when it has no source file."""
    target = inspect.unwrap(obj) if callable(obj) else obj
    try:
        file = inspect.getsourcefile(target) or inspect.getfile(target)
    except TypeError:
        return "<unknown>", 0
    if file.startswith("<"):  # defined by exec or in a REPL: there is no file to point at
        return file, source_line(target)
    module_name = getattr(target, "__module__", None) or ""
    return relative_source(file, module_name), source_line(target)
