"""The gtype package's public surface and its place at the bottom of the runtime."""

from __future__ import annotations

import ast
from pathlib import Path

import runtime.gtype as gtype

GTYPE_DIR = Path(gtype.__file__).parent


def test_all_is_sorted_unique_and_importable() -> None:
    names = list(gtype.__all__)
    constants = [n for n in names if n.isupper()]
    others = [n for n in names if not n.isupper()]

    assert names == sorted(constants) + sorted(others)
    assert len(set(names)) == len(names)
    assert all(hasattr(gtype, n) for n in names)


def test_the_public_surface_is_what_the_rest_of_the_runtime_codes_against() -> None:
    assert {
        "GType", "Schema", "Field", "Method", "Constraints", "FieldViolation", "UnsupportedType",
        "HandlerTypes", "analyze_handler", "analyze_type", "build_schema", "method_name",
        "validate", "register_custom_validator", "Change", "Diff", "diff",
        "canonical_json", "fingerprint",
    } <= set(gtype.__all__)  # fmt: skip


def test_gtype_imports_nothing_else_from_the_runtime() -> None:
    for path in sorted(GTYPE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                if module == "runtime" or module.startswith("runtime."):
                    assert module.startswith("runtime.gtype"), f"{path.name} imports {module}"
