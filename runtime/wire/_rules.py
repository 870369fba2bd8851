"""GType constraints → ``buf.validate`` field rules on the descriptor (SPEC §4, "Constraints in
the contract").

==========================================  ===================================================
GType                                       ``(buf.validate.field)``
==========================================  ===================================================
required field, not nullable, singular      ``required: true``
required union, not nullable                ``(buf.validate.oneof).required`` on its oneof
str: min/max length, pattern, enum          ``string.min_len`` / ``max_len`` / ``pattern`` / ``in``
str format email / uuid / url               ``string.email`` / ``string.uuid`` / ``string.uri``
bytes: min/max length                       ``bytes.min_len`` / ``max_len``
int: gt, ge, lt, le, enum                   ``int64.gt`` / ``gte`` / ``lt`` / ``lte`` / ``in``
float: gt, ge, lt, le, enum                 ``double.gt`` / ``gte`` / ``lt`` / ``lte`` / ``in``
literal                                     ``in`` (``const`` for a single bool)
enum with str values (a protobuf enum)      ``enum.defined_only``, and ``not_in: [0]`` unless null
enum with int values (int64 on the wire)    ``int64.in``
array: min/max length, items                ``repeated.min_items`` / ``max_items`` / ``items``
map: min/max length, keys, values           ``map.min_pairs`` / ``max_pairs`` / ``keys`` / ``values``
==========================================  ===================================================

Not published, because protobuf has no word for them: nullability (null travels as absence, so
a nullable field is simply not ``required``), the calendar validity of a ``date`` string,
``datetime`` values, and custom validators. The runtime still checks those.

An int bound that is not a whole number is rounded to the equivalent whole bound (``ge: 0.5``
is ``gte: 1``), since int64 rules take integers.
"""

from __future__ import annotations

import math
from typing import Any

from runtime.gtype import GType, Schema
from runtime.gtype._buf_validate import FORMAT_RULES

__all__ = ["field_rules", "oneof_required"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def field_rules(schema: Schema, t: GType, *, required: bool) -> Any:
    """A function filling a ``FieldRules`` message for a field of type ``t``, or None when the
    field has no rule (so the descriptor carries no options at all)."""
    rules: list[tuple[str, Any]] = []
    if required and not t.nullable and t.kind not in ("array", "map", "union"):
        rules.append(("required", True))
    if t.kind == "array":
        assert t.items is not None
        repeated = _sized(t, "min_items", "max_items") + _nested("items", schema, t.items)
        if repeated:
            rules.append(("repeated", repeated))
    elif t.kind == "map":
        assert t.keys is not None and t.items is not None
        pairs = _sized(t, "min_pairs", "max_pairs")
        pairs += _nested("keys", schema, t.keys) + _nested("values", schema, t.items)
        if pairs:
            rules.append(("map", pairs))
    else:
        rules += _singular(schema, t)
    if not rules:
        return None

    def fill(message: Any) -> None:
        _apply(message, rules)

    return fill


def oneof_required(t: GType, *, required: bool) -> bool:
    """Whether a union field's oneof must have a member set."""
    return required and not t.nullable


def _apply(message: Any, rules: list[tuple[str, Any]]) -> None:
    for name, value in rules:
        if isinstance(value, list) and value and isinstance(value[0], tuple):
            _apply(getattr(message, name), value)
        elif isinstance(value, list):
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)


def _sized(t: GType, low: str, high: str) -> list[tuple[str, Any]]:
    c = t.constraints
    out: list[tuple[str, Any]] = []
    if c.min_length is not None:
        out.append((low, c.min_length))
    if c.max_length is not None:
        out.append((high, c.max_length))
    return out


def _nested(name: str, schema: Schema, t: GType) -> list[tuple[str, Any]]:
    inner = _singular(schema, t)
    return [(name, inner)] if inner else []


def _singular(schema: Schema, t: GType) -> list[tuple[str, Any]]:
    """The type-specific rules of one singular value (a field, a list item, a map key or value)."""
    c = t.constraints
    if t.kind == "ref":
        target = schema.type(t.name)
        if target.kind != "enum":
            return []  # a message: protovalidate checks its own fields where it is set
        if all(isinstance(v, str) for v in target.values):
            enum: list[tuple[str, Any]] = [("defined_only", True)]
            if not t.nullable:
                enum.append(("not_in", [0]))  # the _UNSPECIFIED value is no member
            return [("enum", enum)]
        return [("int64", [("in", [int(v) for v in target.values])])]
    if t.kind == "literal":
        values = list(t.values)
        if all(isinstance(v, bool) for v in values):
            return [("bool", [("const", values[0])])] if len(values) == 1 else []
        kind = "string" if all(isinstance(v, str) for v in values) else "int64"
        return [(kind, [("in", values)])]
    if t.kind != "primitive":
        return []
    out: list[tuple[str, Any]] = []
    if t.name == "str":
        out = _sized(t, "min_len", "max_len")
        if c.pattern is not None:
            out.append(("pattern", c.pattern))
        if c.format is not None:
            out.append((FORMAT_RULES[c.format], True))
        if c.enum:
            out.append(("in", [str(v) for v in c.enum]))
        return [("string", out)] if out else []
    if t.name == "bytes":
        out = _sized(t, "min_len", "max_len")
        return [("bytes", out)] if out else []
    if t.name == "int":
        out = _int_bounds(t)
        if c.enum:
            out.append(("in", [int(v) for v in c.enum]))
        return [("int64", out)] if out else []
    if t.name == "float":
        out = [(key, float(getattr(c, src))) for src, key in _BOUNDS if getattr(c, src) is not None]
        if c.enum:
            out.append(("in", [float(v) for v in c.enum]))
        return [("double", out)] if out else []
    return []


_BOUNDS = (("gt", "gt"), ("ge", "gte"), ("lt", "lt"), ("le", "lte"))


def _int_bounds(t: GType) -> list[tuple[str, Any]]:
    """int64 bounds equivalent to the GType's (possibly fractional) ones, within int64."""
    c = t.constraints
    whole = {
        "gt": None if c.gt is None else math.floor(c.gt),
        "gte": None if c.ge is None else math.ceil(c.ge),
        "lt": None if c.lt is None else math.ceil(c.lt),
        "lte": None if c.le is None else math.floor(c.le),
    }
    return [
        (key, min(max(int(value), _INT64_MIN), _INT64_MAX))
        for key, value in whole.items()
        if value is not None
    ]
