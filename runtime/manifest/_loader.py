"""Loading a module folder: its manifest, its handlers, its hooks and its schema.

A module is a real Python package named after where it lives: the folder ``<dir>/users`` is the
package ``<dir's name>.users`` imported from the folder holding ``<dir>`` (``modules/users`` of a
project is ``modules.users``, imported from the project root). So the code that runs is always
the code in the folder that was given, wherever it is, and a module imports its own files
relatively (``from .models import User``) or by that name. Everything that can be checked without
serving is checked here, and every failure names the file and the key or function at fault:

- the manifest validates (:func:`load_manifest`);
- every ``@handler`` function has the handler shape and one method name has one function;
- every ``[methods.X]`` policy and every handler-level hook names a method that exists;
- every hook target imports and is callable.

    >>> loaded = load_module(Path("modules/users"))      # doctest: +SKIP
    >>> [h.handler_id for h in loaded.handlers]          # doctest: +SKIP
    ['users.CreateUser', 'users.GetUser']
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from runtime.errors import ManifestError
from runtime.gtype import Schema, build_schema
from runtime.manifest._capabilities import CapabilitySet
from runtime.manifest._handler import HandlerSpec, handler_mark, register_handler
from runtime.manifest._source import source_location
from runtime.manifest._toml import HookDecl, MethodPolicy, ModuleManifest, load_manifest

__all__ = ["LoadedModule", "ResolvedHook", "discover_modules", "load_module", "module_package"]

MANIFEST_FILE = "module.toml"


@dataclass(frozen=True, slots=True)
class ResolvedHook:
    """A ``[[hooks]]`` entry with its target imported."""

    decl: HookDecl
    function: Callable[..., Any]
    is_async: bool
    file: str
    """Source file of the function, relative to its import root."""
    line: int

    @property
    def id(self) -> str:
        return self.decl.id

    @property
    def phase(self) -> Literal["before", "after", "catch"]:
        return self.decl.phase

    @property
    def level(self) -> Literal["module", "handler"]:
        return self.decl.level

    @property
    def method(self) -> str | None:
        return self.decl.method


@dataclass(frozen=True, slots=True)
class LoadedModule:
    """A module ready to serve: manifest, registered handlers, resolved hooks and schema."""

    directory: Path
    manifest_path: Path
    manifest: ModuleManifest
    handlers_module: ModuleType
    handlers: tuple[HandlerSpec, ...]
    """In definition order."""
    hooks: tuple[ResolvedHook, ...]
    """In declaration order."""
    schema: Schema

    @property
    def name(self) -> str:
        return self.manifest.module.name

    @property
    def capabilities(self) -> CapabilitySet:
        return CapabilitySet.from_manifest(self.manifest)

    def handler(self, method: str) -> HandlerSpec:
        """The handler of ``method``; KeyError names the module and method when there is none."""
        for spec in self.handlers:
            if spec.method == method:
                return spec
        raise KeyError(f"module {self.name!r} has no method {method!r}")

    def policy(self, method: str) -> MethodPolicy:
        """The policy of ``method``, with defaults for anything it does not declare."""
        return self.manifest.policy(method)

    def hooks_for(self, method: str) -> tuple[ResolvedHook, ...]:
        """The hooks that apply to ``method``: module-level ones first, then its own."""
        module_level = tuple(h for h in self.hooks if h.method is None)
        return module_level + tuple(h for h in self.hooks if h.method == method)


def discover_modules(root: Path) -> list[Path]:
    """The sub-folders of ``root`` that hold a ``module.toml``, sorted by name."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file())


def load_module(directory: Path) -> LoadedModule:
    """Load the module in ``directory``.

    Raises :class:`~runtime.errors.ManifestError` for manifest problems,
    :class:`~runtime.errors.HandlerShapeError` for a function that is not a handler, and
    :class:`runtime.gtype.UnsupportedType` for a message type the analyzer cannot map.
    """
    path = directory / MANIFEST_FILE
    manifest = load_manifest(path)
    module = manifest.module.name
    handlers = manifest.module.handlers
    if handlers is None:  # the handlers.py next to module.toml, under the folder's own name
        handlers = f"{_importable(path)}.handlers"
    package = handlers.rpartition(".")[0]
    handlers_module = _import(path, "module.handlers", handlers)
    specs = tuple(register_handler(fn, module=module) for fn in _marked(handlers_module))
    if not specs:
        raise ManifestError(
            f"{path}: module.handlers: {handlers!r} defines no @handler functions"
        )
    _refuse_duplicates(path, specs)
    methods = {spec.method for spec in specs}
    known = ", ".join(sorted(methods))
    for method in manifest.methods:
        if method not in methods:
            raise ManifestError(
                f"{path}: methods.{method}: there is no handler for {method!r} (handlers: {known})"
            )
    hooks = tuple(
        _resolve_hook(path, i, decl, methods, package) for i, decl in enumerate(manifest.hooks)
    )
    schema = build_schema(module, [spec.types for spec in specs])
    return LoadedModule(
        directory=directory,
        manifest_path=path,
        manifest=manifest,
        handlers_module=handlers_module,
        handlers=specs,
        hooks=hooks,
        schema=schema,
    )


def module_package(directory: Path) -> tuple[Path, str]:
    """Where the module folder ``directory`` is imported from, and as which package.

        >>> module_package(Path("/srv/shop/modules/users"))
        (PosixPath('/srv/shop'), 'modules.users')
    """
    directory = directory.resolve()
    parent = directory.parent
    for name in (parent.name, directory.name):
        if not name.isidentifier():
            raise ManifestError(
                f"{directory}: a module folder and the folder holding it must be valid Python "
                f"names, so the module can be imported as <folder>.<module>; {name!r} is not"
            )
    return parent.parent, f"{parent.name}.{directory.name}"


def _importable(path: Path) -> str:
    """Make the module folder of ``path`` importable as its own package; that package's name.

    The folder holding it is bound to its package name (``modules``) right here, from where it
    is, rather than searched for on ``sys.path``: another ``modules`` earlier on the path, or a
    regular package beating a folder without ``__init__.py``, must not be what runs. The import
    root is also added to the end of ``sys.path``, for the module's other absolute imports. A
    process imports one package per name, so a name already bound to another folder is refused
    rather than silently shadowed.
    """
    root, package = module_package(path.parent)
    parent_name = package.partition(".")[0]
    parent_dir = path.parent.parent.resolve()
    if not any(Path(entry or ".").resolve() == root for entry in sys.path):
        sys.path.append(str(root))
    bound = sys.modules.get(parent_name)
    if bound is None:
        try:
            bound = _bind_package(parent_name, parent_dir)
        except Exception as exc:
            raise ManifestError(
                f"{path}: cannot import the package {parent_name!r} of {parent_dir}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    where = [Path(p).resolve() for p in getattr(bound, "__path__", ())]
    if parent_dir not in where:
        found = ", ".join(str(p) for p in where) or "a module, not a folder"
        raise ManifestError(
            f"{path}: the module is imported as {package!r}, but in this process "
            f"{parent_name!r} is already {found}; serve one folder named {parent_name!r} per "
            "process (or rename one of them)"
        )
    return package


def _bind_package(name: str, folder: Path) -> ModuleType:
    """Import ``folder`` as the top-level package ``name`` (a namespace one without __init__)."""
    init = folder / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
    else:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        if spec.loader is not None:
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import(path: Path, key: str, dotted: str) -> ModuleType:
    try:
        return importlib.import_module(dotted)
    except Exception as exc:
        raise ManifestError(
            f"{path}: {key}: cannot import {dotted!r}: {type(exc).__name__}: {exc}"
        ) from exc


def _marked(module: ModuleType) -> list[Any]:
    """Every ``@handler``-marked object in the module's namespace, in definition order."""
    found: dict[int, Any] = {}
    for obj in vars(module).values():
        if handler_mark(obj) is not None:
            found.setdefault(id(obj), obj)
    return sorted(found.values(), key=lambda obj: _order(obj))


def _order(obj: Any) -> int:
    mark = handler_mark(obj)
    return mark.order if mark is not None else -1


def _refuse_duplicates(path: Path, specs: tuple[HandlerSpec, ...]) -> None:
    first: dict[str, HandlerSpec] = {}
    for spec in specs:
        earlier = first.setdefault(spec.method, spec)
        if earlier is not spec:
            raise ManifestError(
                f"{path}: two handlers for method {spec.method!r}: "
                f"{_where(earlier)} and {_where(spec)}"
            )


def _where(spec: HandlerSpec) -> str:
    file, line = spec.location()
    return f"{spec.function.__qualname__} ({file}:{line})"


def _resolve_hook(
    path: Path, index: int, decl: HookDecl, methods: set[str], package: str
) -> ResolvedHook:
    key = f"hooks[{index}]"
    if decl.method is not None and decl.method not in methods:
        raise ManifestError(
            f"{path}: {key}.method: hook {decl.id!r} names method {decl.method!r}, which has no handler"
        )
    module_name, _, attr_path = decl.target.partition(":")
    if module_name.startswith("."):  # inside the module's own package
        module_name = package + module_name
    try:
        target: Any = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            target = getattr(target, attr)
    except Exception as exc:
        raise ManifestError(
            f"{path}: {key}.target: hook {decl.id!r} has target {decl.target!r}, which cannot be "
            f"resolved: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(target) or isinstance(target, type):
        raise ManifestError(
            f"{path}: {key}.target: hook {decl.id!r} has target {decl.target!r}, which is not a function"
        )
    file, line = source_location(target)
    return ResolvedHook(
        decl=decl, function=target, is_async=_is_async(target), file=file, line=line
    )


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an instance with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)
