"""Unfilled transformer stubs: found before they can reach a caller (SPEC §4).

``modrpc gen`` writes a stub for every transformer a breaking version needs; each stub raises
``NotImplementedError`` until someone writes the real transformation. A stub left as it is would
answer every old caller INTERNAL, so ``modrpc gen --check``, ``modrpc up`` and every worker at
start refuse it, naming the file and the function.

A transformer function is unfilled when its body, apart from a docstring, is only ``raise
NotImplementedError(...)``, ``pass`` or ``...``.
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["TRANSFORMER_PREFIXES", "unfilled_stubs", "unfilled_transformers"]

TRANSFORMER_PREFIXES = ("forward_", "backward_")
"""Transformer functions are ``forward_<method>_request`` and ``backward_<method>_response``."""


def _is_placeholder(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Pass):
        return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        return statement.value.value is Ellipsis
    if isinstance(statement, ast.Raise) and statement.exc is not None:
        raised = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
        return isinstance(raised, ast.Name) and raised.id == "NotImplementedError"
    return False


def unfilled_stubs(source: str, *, origin: str = "<transformers>") -> list[str]:
    """The transformer functions in ``source`` that are still placeholders, in source order.

    A source that does not parse is not judged here: loading it reports the syntax error.
    """
    try:
        tree = ast.parse(source, filename=origin)
    except SyntaxError:
        return []
    found = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if not node.name.startswith(TRANSFORMER_PREFIXES):
            continue
        body = list(node.body)
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            if isinstance(body[0].value.value, str):
                body = body[1:]  # the docstring
        if not body or all(_is_placeholder(statement) for statement in body):
            found.append(node.name)
    return found


def unfilled_transformers(module_dir: Path, *, root: Path | None = None) -> list[str]:
    """One problem per unfilled stub under ``module_dir/transformers``, naming file and function.

    Paths are shown relative to ``root`` when given (the project root, for messages people read).
    """
    problems = []
    for path in sorted((module_dir / "transformers").glob("*.py")):
        names = unfilled_stubs(path.read_text("utf-8"), origin=str(path))
        shown = path.relative_to(root) if root is not None and path.is_relative_to(root) else path
        problems += [
            f"{shown}: {name} is still the generated stub; write the transformation "
            "(old callers would get INTERNAL)"
            for name in names
        ]
    return problems
