"""The import graph of the runtime has no cycles: between packages, and inside any package.

A cycle means two concepts cannot be understood (or tested, or replaced) one without the other;
ARCHITECTURE.md's rule is that imports never go back up the request flow. Every import counts,
those inside functions too; only imports made for type checking alone (``if TYPE_CHECKING:``)
are left out, since they never run.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import runtime

ROOT = Path(runtime.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path) -> set[str]:
    """Modules of the runtime that ``path`` imports at run time."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    found: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("runtime"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("runtime"):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        graph[name] |= {m for m in _runtime_imports(path) if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_no_import_cycle_between_runtime_packages() -> None:
    packages: dict[str, set[str]] = defaultdict(set)
    for module, imports in _graph().items():
        packages[_package(module)] |= {_package(m) for m in imports} - {_package(module)}
    assert _cycles(packages) == []


def test_no_import_cycle_inside_a_package() -> None:
    inside: dict[str, set[str]] = defaultdict(set)
    for module, imports in _graph().items():
        # A package's __init__ re-exports its private modules; a private module importing its own
        # package's __init__ back would be the cycle.
        inside[module] |= {m for m in imports if _package(m) == _package(module)}
    assert _cycles(inside) == []


def test_the_graph_sees_imports_inside_functions() -> None:
    """The checks above would be hollow if a lazy import went unseen: the CLI imports the gateway
    inside a function, and that edge is in the graph."""
    graph = _graph()
    assert any(m.startswith("runtime.gateway") for m in graph["runtime.cli._serve"])


def test_a_cycle_is_found_when_there_is_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
