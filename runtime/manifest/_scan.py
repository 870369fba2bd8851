"""Refusing registration when a module asks for, or uses, a capability it may not have.

Two checks run before a module is served:

1. every module named in ``capabilities.modules`` must exist;
2. the source of the files that define its handlers and hooks is scanned with :mod:`ast` for
   uses of ``gctx`` that name a capability literally, and each use must be declared:

   ============================================  ===================
   ``gctx.modules.<name>``                       ``modules``
   ``gctx.publish("<topic>", ...)``              ``publish``
   ``gctx.subscribe("<topic>", ...)``            ``subscribe``
   ``gctx.secrets.get("<name>")``                ``secrets``
   ``gctx.secrets["<name>"]``                    ``secrets``
   ``@subscriber("<topic>", ...)``               ``subscribe``
   ============================================  ===================

``gctx`` here means a name called ``gctx``, the third parameter of any handler, or a parameter
annotated ``GlobalContext``. ``gctx.modules.<name>(...)`` called directly is a method of the
registry itself (``gctx.modules.names()``), not a module, so it is not counted. The scan is static, so a topic computed at run time is not seen; such
uses are still checked when they happen, by :class:`CapabilitySet`.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import CapabilityError
from runtime.manifest._loader import LoadedModule
from runtime.manifest._source import relative_source

__all__ = ["CapabilityUse", "check_registration", "scan_source"]


@dataclass(frozen=True, slots=True)
class CapabilityUse:
    """One literal use of a capability found in source code."""

    key: str
    """``modules``, ``publish``, ``subscribe`` or ``secrets``."""
    value: str
    file: str
    line: int


def check_registration(loaded: LoadedModule, known_modules: set[str]) -> None:
    """Raise :class:`~runtime.errors.CapabilityError` listing every unknown or undeclared capability.

    ``known_modules`` are the names of every module the runtime serves (this one included).
    """
    caps = loaded.capabilities
    problems: list[str] = []
    unknown = sorted(set(loaded.manifest.capabilities.modules) - known_modules)
    if unknown:
        problems.append(
            f"{loaded.manifest_path}: capabilities.modules: unknown module(s) {unknown}; "
            f"known modules are {sorted(known_modules)}"
        )
    allowed: dict[str, Callable[[str], bool]] = {
        "modules": caps.allows_module,
        "publish": caps.allows_publish,
        "subscribe": caps.allows_subscribe,
        "secrets": caps.allows_secret,
    }
    for use in _uses(loaded):
        if not allowed[use.key](use.value):
            problems.append(
                f"{use.file}:{use.line}: module {loaded.name!r} uses {use.key}=[{use.value!r}] "
                f"but did not declare it in [capabilities]"
            )
    if problems:
        raise CapabilityError("\n".join(problems))


def _uses(loaded: LoadedModule) -> Iterator[CapabilityUse]:
    functions: list[Any] = [spec.function for spec in loaded.handlers]
    functions += [hook.function for hook in loaded.hooks]
    gctx_names = {"gctx"}
    for spec in loaded.handlers:
        params = list(inspect.signature(spec.function).parameters)
        gctx_names.add(params[2])
    files: dict[str, str] = {}  # absolute path -> module name, in first-seen order
    for fn in functions:
        target = inspect.unwrap(fn)
        try:
            file = inspect.getsourcefile(target)
        except TypeError:
            file = None
        if file is not None and not file.startswith("<"):
            files.setdefault(str(Path(file).resolve()), getattr(target, "__module__", "") or "")
    for file, module_name in files.items():
        source = Path(file).read_text(encoding="utf-8")
        yield from scan_source(source, relative_source(file, module_name), gctx_names)


def scan_source(
    source: str, file: str, gctx_names: Iterable[str] = ("gctx",)
) -> list[CapabilityUse]:
    """Every literal capability use in ``source``, in line order; ``file`` labels the results."""
    tree = ast.parse(source, filename=file)
    names = set(gctx_names) | _annotated_global_context(tree)
    found: list[CapabilityUse] = []

    def is_gctx(node: ast.expr) -> bool:
        return isinstance(node, ast.Name) and node.id in names

    def is_gctx_attr(node: ast.expr, attr: str) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == attr and is_gctx(node.value)

    registry_calls = {
        id(node.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_gctx_attr(node.value, "modules"):
            if id(node) not in registry_calls:
                found.append(CapabilityUse("modules", node.attr, file, node.lineno))
        elif isinstance(node, ast.Call) and _is_subscriber_decorator(node.func):
            topic = _literal_argument(node, "topic")
            if topic is not None:
                found.append(CapabilityUse("subscribe", topic, file, node.lineno))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            if func.attr in ("publish", "subscribe") and is_gctx(func.value):
                topic = _literal_argument(node, "topic")
                if topic is not None:
                    found.append(CapabilityUse(func.attr, topic, file, node.lineno))
            elif func.attr == "get" and is_gctx_attr(func.value, "secrets"):
                name = _literal_argument(node, "name")
                if name is not None:
                    found.append(CapabilityUse("secrets", name, file, node.lineno))
        elif isinstance(node, ast.Subscript) and is_gctx_attr(node.value, "secrets"):
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                found.append(CapabilityUse("secrets", node.slice.value, file, node.lineno))
    found.sort(key=lambda use: (use.line, use.key, use.value))
    return found


def _is_subscriber_decorator(func: ast.expr) -> bool:
    """``subscriber(...)`` or ``runtime.subscriber(...)``: a function fed by a global topic."""
    if isinstance(func, ast.Name):
        return func.id == "subscriber"
    return isinstance(func, ast.Attribute) and func.attr == "subscriber"


def _literal_argument(call: ast.Call, keyword: str) -> str | None:
    """The first positional argument (or ``keyword=``) when it is a string literal."""
    arg: ast.expr | None = call.args[0] if call.args else None
    if arg is None:
        arg = next((kw.value for kw in call.keywords if kw.arg == keyword), None)
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def _annotated_global_context(tree: ast.AST) -> set[str]:
    """Names of parameters annotated ``GlobalContext`` (bare, dotted or as a string)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            ann = node.annotation
            shown = ""
            if isinstance(ann, ast.Name):
                shown = ann.id
            elif isinstance(ann, ast.Attribute):
                shown = ann.attr
            elif isinstance(ann, ast.Constant) and isinstance(ann.value, str):
                shown = ann.value.rpartition(".")[2]
            if shown == "GlobalContext":
                names.add(node.arg)
    return names
