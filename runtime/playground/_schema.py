"""A version's schema as people read it: field rows with their constraints, and example requests.

The explorer prefills its editor with :func:`example`, a request that satisfies the version's
own constraints where it can (a string of the minimum length, a number inside its bounds, an
email for an email field), so that sending it unchanged usually succeeds and editing it shows
what each constraint does.
"""

from __future__ import annotations

from typing import Any

from runtime.gtype import Constraints, GType, Schema, describe

__all__ = ["constraint_list", "example", "field_rows", "type_text"]

MAX_DEPTH = 6
"""Nested objects shown (and filled in examples) before a recursive type is cut off."""


def type_text(node: GType, schema: Schema) -> str:
    """A short type name: ``string``, ``int``, ``User``, ``list[OrderItem]``, ``map[string, int]``."""
    text: str
    if node.kind == "primitive":
        text = {"str": "string"}.get(node.name, node.name)
        if node.constraints.format:
            text = f"{text} ({node.constraints.format})"
    elif node.kind == "ref" or node.kind in ("object", "enum"):
        text = node.name or node.kind
    elif node.kind == "array":
        assert node.items is not None
        text = f"list[{type_text(node.items, schema)}]"
    elif node.kind == "map":
        assert node.keys is not None and node.items is not None
        text = f"map[{type_text(node.keys, schema)}, {type_text(node.items, schema)}]"
    elif node.kind == "literal":
        text = " | ".join(repr(v) for v in node.values)
    else:
        text = " | ".join(type_text(v, schema) for v in node.variants)
    return f"{text} | null" if node.nullable else text


def constraint_list(node: GType, schema: Schema) -> list[str]:
    """Each constraint of ``node`` in words: ``min length 1``, ``≤ 100``, ``email``."""
    c: Constraints = node.constraints
    out: list[str] = []
    if c.min_length is not None:
        out.append(f"min length {c.min_length}")
    if c.max_length is not None:
        out.append(f"max length {c.max_length}")
    for key, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        value = getattr(c, key)
        if value is not None:
            out.append(f"{sign} {value:g}")
    if c.pattern:
        out.append(f"matches /{c.pattern}/")
    if c.format:
        out.append(c.format)
    if c.enum:
        out.append(f"one of {list(c.enum)!r}")
    out.extend(f"custom {name}" for name in c.custom)
    resolved = schema.resolve(node) if node.kind == "ref" else node
    if resolved.kind == "enum":
        out.append(f"one of {list(resolved.values)!r}")
    return out


def field_rows(node: GType, schema: Schema, depth: int = 0, prefix: str = "") -> list[dict[str, Any]]:
    """One row per field of an object type, nested objects indented under their field."""
    node = schema.resolve(node)
    rows: list[dict[str, Any]] = []
    if node.kind != "object" or depth >= MAX_DEPTH:
        return rows
    for f in node.fields:
        path = f"{prefix}{f.name}"
        rows.append(
            {
                "path": path,
                "name": f.name,
                "depth": depth,
                "type": type_text(f.type, schema),
                "required": f.required,
                "nullable": f.type.nullable,
                "default": f.default if not f.required else None,
                "constraints": constraint_list(f.type, schema),
                "expects": describe(f.type, schema),
                "description": f.description or f.type.description,
            }
        )
        inner = f.type.items if f.type.kind == "array" and f.type.items is not None else f.type
        suffix = "[]." if inner is not f.type else "."
        rows.extend(field_rows(inner, schema, depth + 1, f"{path}{suffix}"))
    return rows


def example(node: GType, schema: Schema, depth: int = 0) -> Any:
    """A value of ``node`` that meets its constraints where that is easy to do."""
    if depth > MAX_DEPTH:
        return None
    if node.kind == "ref":
        return example(schema.resolve(node), schema, depth)
    c = node.constraints
    if c.enum:
        return c.enum[0]
    if node.kind == "object":
        return {
            f.name: example(f.type, schema, depth + 1)
            for f in node.fields
            if f.required or depth == 0  # the top level shows every field; nested, the needed ones
        }
    if node.kind == "array":
        assert node.items is not None
        count = max(1, c.min_length or 0)
        return [example(node.items, schema, depth + 1) for _ in range(min(count, 3))]
    if node.kind == "map":
        assert node.items is not None and node.keys is not None
        key = "key" if node.keys.name == "str" else 1
        return {key: example(node.items, schema, depth + 1)}
    if node.kind in ("enum", "literal"):
        return node.values[0] if node.values else None
    if node.kind == "union":
        return example(node.variants[0], schema, depth) if node.variants else None
    return _primitive(node.name, c)


def _primitive(name: str, c: Constraints) -> Any:
    if name == "str":
        if c.format == "email":
            return "ada@example.com"
        if c.format == "uuid":
            return "00000000-0000-4000-8000-000000000000"
        if c.format == "url":
            return "https://example.com"
        text = "example"
        if c.max_length is not None and len(text) > c.max_length:
            text = text[: c.max_length]
        if c.min_length is not None and len(text) < c.min_length:
            text = text + "x" * (c.min_length - len(text))
        return text
    if name in ("int", "float"):
        low = c.ge if c.ge is not None else (c.gt + 1 if c.gt is not None else None)
        high = c.le if c.le is not None else (c.lt - 1 if c.lt is not None else None)
        value: float = 1
        if low is not None and value < low:
            value = low
        if high is not None and value > high:
            value = high
        return int(value) if name == "int" else float(value)
    if name == "bool":
        return False
    if name == "datetime":
        return "2025-06-01T12:00:00Z"
    if name == "date":
        return "2025-06-01"
    if name == "bytes":
        return ""
    return None
