"""Transformer steps between two versions of a module.

A step lives in ``modules/<m>/transformers/<vseg>.py`` (named after the version it leads to)
and holds plain functions over JSON-like dicts:

- ``forward_<method>_request(request) -> request``: the older shape → this version's;
- ``backward_<method>_response(response) -> response``: this version's shape → the older one.

A method whose request (or response) did not change between the two versions needs no function;
it passes through as is. ``modrpc gen`` writes a stub when it records a breaking version, and the
stub raises until someone writes the real transformation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.gtype import GType, Schema, fingerprint
from runtime.versions import RecordedVersion
from runtime.wire import snake, version_segment

__all__ = [
    "changed_directions",
    "closure_fingerprint",
    "render_transformer_stub",
    "transformer_module",
    "transformer_path",
]


def transformer_path(module_dir: Path, from_version: str, to_version: str) -> Path:
    del from_version  # the step is named after its target; its FROM constant records the source
    return module_dir / "transformers" / f"{version_segment(to_version)}.py"


def transformer_module(module: str, to_version: str) -> str:
    """The import path of the step leading to ``to_version``."""
    return f"modules.{module}.transformers.{version_segment(to_version)}"


def closure_fingerprint(schema: Schema, t: GType) -> str:
    """A fingerprint of ``t`` together with every named type it reaches."""
    seen: dict[str, Any] = {}
    stack = [t]
    while stack:
        node = stack.pop()
        if node.kind == "ref" and node.name not in seen:
            target = schema.type(node.name)
            seen[node.name] = target.to_json()
            stack.append(target)
        stack.extend(f.type for f in node.fields)
        stack.extend(x for x in (node.items, node.keys) if x is not None)
        stack.extend(node.variants)
    return fingerprint({"root": t.to_json(), "types": seen})


def changed_directions(old: Schema, new: Schema) -> list[tuple[str, str]]:
    """``(method, "request"|"response")`` pairs whose shape differs between the two schemas."""
    out: list[tuple[str, str]] = []
    old_methods = {m.name: m for m in old.methods}
    for m in new.methods:
        before = old_methods.get(m.name)
        if before is None:
            continue
        if closure_fingerprint(old, before.request) != closure_fingerprint(new, m.request):
            out.append((m.name, "request"))
        if closure_fingerprint(old, before.response) != closure_fingerprint(new, m.response):
            out.append((m.name, "response"))
    return out


def render_transformer_stub(module: str, old: RecordedVersion, new: RecordedVersion) -> str:
    lines = [
        f'"""Transformers between {module} {old.id} and {new.id}.',
        "",
        "Written by `modrpc gen` as stubs when it recorded the breaking version; replace each body",
        "with the real transformation. Requests go forward (old shape to new), responses go",
        "backward (new shape to old). Functions take and return JSON-like dicts.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Any",
        "",
        f'FROM = "{old.id}"',
        f'TO = "{new.id}"',
    ]
    for method, direction in changed_directions(old.schema, new.schema):
        verb = "forward" if direction == "request" else "backward"
        name = f"{verb}_{snake(method)}_{direction}"
        lines += [
            "",
            "",
            f"def {name}({direction}: dict[str, Any]) -> dict[str, Any]:",
            f'    """{method} {direction}: {"the " + old.id + " shape to " + new.id if verb == "forward" else "the " + new.id + " shape to " + old.id}."""',
            "    raise NotImplementedError(",
            f'        "{module} {old.id} -> {new.id}: {name} is a generated stub; write the transformer"',
            "    )",
        ]
    return "\n".join(lines) + "\n"
