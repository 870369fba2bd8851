"""Validation: check JSON-like data against a GType and report every violation at once.

``validate`` never raises for bad data; it returns a list of :class:`FieldViolation`, each with a
path (``items[2].sku``, ``tags["red"]``), a readable ``expected`` and the ``actual`` value
(``"<missing>"`` for a required field that is absent). It raises only for programmer errors: a
``ref`` that the schema cannot resolve.

What each kind accepts:

* ``str``: str. ``int``: int but not bool. ``float``: int or float but not bool. ``bool``: bool.
* ``bytes``: bytes, bytearray, or str (the JSON form; its length counts UTF-8 bytes).
* ``datetime`` / ``date``: the objects or their ISO-8601 strings (a datetime is not a date).
* ``enum`` / ``literal``: the wire values (Enum members count as their value); True is not 1.
* ``object``: a dict with exactly the declared keys (unknown keys are violations).
* ``array``: list or tuple. ``map``: a dict; int-keyed maps also take decimal string keys,
  because JSON object keys are always strings.
* ``union``: a value any one variant accepts.
* ``None`` only where the node is nullable.

Checks run in a fixed order: kind, then constraints (min/max length, gt, ge, lt, le, pattern,
format, enum), then children, then custom validators, which, as in pydantic, run only when
everything before them passed. The generated ``.proto`` publishes the same constraints as
``buf.validate`` rules (``runtime.wire._rules``), and a property test holds protovalidate to the
same verdicts, field path for field path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum
from typing import Any

from runtime.gtype._checks import (
    check_format,
    check_pattern,
    is_date,
    is_datetime,
    map_key_ok,
    run_custom_validator,
)
from runtime.gtype._errors import FieldViolation
from runtime.gtype._model import Constraints, GType, Schema

__all__ = [
    "CONSTRAINT_ORDER",
    "MISSING",
    "PRIMITIVE_KINDS",
    "REQUIRED",
    "constraint_text",
    "describe",
    "field_path",
    "key_path",
    "map_key_text",
    "same_scalar",
    "validate",
]

MISSING = "<missing>"
"""The ``actual`` of a violation for a required field that is absent."""
REQUIRED = "a value (field is required)"
"""The ``expected`` of a violation for a required field that is absent."""
CONSTRAINT_ORDER: tuple[str, ...] = (
    "min_length",
    "max_length",
    "gt",
    "ge",
    "lt",
    "le",
    "pattern",
    "format",
    "enum",
)
"""The order constraints are checked (and reported) in."""

_KIND_TEXT = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "bytes": "bytes",
    "datetime": "datetime (ISO 8601)",
    "date": "date (ISO 8601, YYYY-MM-DD)",
}
_FORMAT_TEXT = {"email": "email address", "uuid": "UUID", "url": "URL (an absolute URI)"}
_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def validate(
    value: object, gtype: GType, schema: Schema | None = None, *, path: str = ""
) -> list[FieldViolation]:
    """Every way ``value`` fails ``gtype``, in a deterministic order; empty when it is valid.

    >>> from runtime.gtype import GType
    >>> validate([1, "x"], GType.array(GType.primitive("int")))
    [FieldViolation(path='[1]', expected='integer', actual='x')]
    """
    out: list[FieldViolation] = []
    _check(value, gtype, schema, path, out)
    return out


def describe(node: GType, schema: Schema | None = None) -> str:
    """What ``node`` expects, in words (``string``, ``one of ['a', 'b']``, ``... or null``)."""
    node = _resolve(node, schema)
    if node.kind == "primitive":
        text = _FORMAT_TEXT.get(node.constraints.format or "", _KIND_TEXT[node.name])
    elif node.kind in ("literal", "enum"):
        text = f"one of {list(node.values)!r}"
    elif node.kind == "object":
        text = f"object ({node.name})" if node.name else "object"
    elif node.kind == "array":
        text = "array"
    elif node.kind == "map":
        assert node.keys is not None
        text = f"map with {_KIND_TEXT[node.keys.name]} keys"
    else:  # union
        text = " or ".join(describe(v, schema) for v in node.variants)
    return f"{text} or null" if node.nullable else text


def constraint_text(node: GType, key: str) -> str:
    """The ``expected`` text for a value of ``node`` that breaks its constraint ``key``."""
    c = node.constraints
    if key in ("min_length", "max_length"):
        bound = c.min_length if key == "min_length" else c.max_length
        word = "at least" if key == "min_length" else "at most"
        noun, unit = {
            "array": ("array", "items"),
            "map": ("map", "entries"),
            "bytes": ("bytes", "bytes"),
        }.get(node.kind if node.kind != "primitive" else node.name, ("string", "characters"))
        return f"{noun} of {word} {bound} {unit}"
    if key in _OPS:
        return f"{_KIND_TEXT[node.name]} {_OPS[key]} {getattr(c, key)!r}"
    if key == "pattern":
        return f"string matching /{c.pattern}/"
    if key == "format":
        return _FORMAT_TEXT[c.format or ""]
    if key == "enum":
        return f"one of {list(c.enum)!r}"
    raise ValueError(f"unknown constraint {key!r}")


def field_path(path: str, name: str) -> str:
    """The path of field ``name`` inside ``path`` (``user`` + ``email`` = ``user.email``)."""
    return f"{path}.{name}" if path else name


def map_key_text(key_type: str) -> str:
    """The ``expected`` text for a map key of the wrong type (``string key``)."""
    return f"{_KIND_TEXT[key_type]} key"


def key_path(path: str, key: object) -> str:
    """The path of a map entry or an unknown object key: ``tags["red"]``, ``scores[3]``."""
    if isinstance(key, str):
        return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    return f"{path}[{key!r}]"


def same_scalar(value: object, allowed: tuple[object, ...]) -> bool:
    """Whether ``value`` equals one of ``allowed`` without bool/int/str mixing (True is not 1)."""
    if isinstance(value, Enum):
        value = value.value
    for a in allowed:
        if isinstance(value, bool) or isinstance(a, bool):
            if value is a:
                return True
        elif isinstance(value, str) or isinstance(a, str):
            if isinstance(value, str) and isinstance(a, str) and value == a:
                return True
        elif isinstance(value, (int, float)) and value == a:
            return True
    return False


def _resolve(node: GType, schema: Schema | None) -> GType:
    """The node a ref stands for, nullable when the ref is; other nodes as they are."""
    if node.kind != "ref":
        return node
    target = _target(node, schema)
    return target.with_nullable(True) if node.nullable and not target.nullable else target


def _target(node: GType, schema: Schema | None) -> GType:
    """The named type a ref names; KeyError (a programmer error) when it cannot be found."""
    if schema is None:
        raise KeyError(f"cannot resolve ref {node.name!r}: validate() was given no schema")
    try:
        target = schema.type(node.name)
    except KeyError as exc:
        raise KeyError(
            f"cannot resolve ref {node.name!r}: schema {schema.module!r} has no such type"
        ) from exc
    return target


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_bytes(value: object) -> bool:
    return isinstance(value, (bytes, bytearray, str))


PRIMITIVE_KINDS: dict[str, Callable[[object], bool]] = {
    "str": lambda value: isinstance(value, str),
    "int": _is_int,
    "float": _is_number,
    "bool": lambda value: isinstance(value, bool),
    "bytes": _is_bytes,
    "datetime": is_datetime,
    "date": is_date,
}
"""Whether a value has the right Python type for a primitive, by the primitive's name."""


def _kind_ok(value: object, node: GType) -> bool:
    """Whether ``value`` has the right Python type for a primitive, literal or enum node."""
    if node.kind in ("literal", "enum"):
        return same_scalar(value, node.values)
    return PRIMITIVE_KINDS.get(node.name, is_date)(value)


def _constraint_ok(value: Any, node: GType, key: str) -> bool:
    c = node.constraints
    if key == "min_length":
        return _length(value, node) >= (c.min_length or 0)
    if key == "max_length":
        return _length(value, node) <= (c.max_length or 0)
    if key == "gt":
        return bool(value > c.gt)
    if key == "ge":
        return bool(value >= c.ge)
    if key == "lt":
        return bool(value < c.lt)
    if key == "le":
        return bool(value <= c.le)
    if key == "pattern":
        return check_pattern(c.pattern or "", value)
    if key == "format":
        return check_format(c.format or "", value)
    return same_scalar(value, c.enum)


def _length(value: Any, node: GType) -> int:
    if node.kind == "primitive" and node.name == "bytes" and isinstance(value, str):
        return len(value.encode("utf-8"))
    return len(value)


def _present(node: GType, key: str) -> bool:
    value = getattr(node.constraints, key)
    return value is not None and value != ()


_PRESENT: dict[int, tuple[Constraints, tuple[str, ...]]] = {}
"""id(constraints) → (the constraints, the keys they set, in CONSTRAINT_ORDER). Holding the
object keeps its id from being reused; schemas are long-lived, so this stays small, and it is
emptied if it ever grows past :data:`_PRESENT_MAX`."""
_PRESENT_MAX = 4096


def _present_keys(node: GType) -> tuple[str, ...]:
    """The constraint keys ``node`` sets, worked out once per constraints object."""
    constraints = node.constraints
    cached = _PRESENT.get(id(constraints))
    if cached is not None and cached[0] is constraints:
        return cached[1]
    keys = tuple(key for key in CONSTRAINT_ORDER if _present(node, key))
    if len(_PRESENT) >= _PRESENT_MAX:
        _PRESENT.clear()
    _PRESENT[id(constraints)] = (constraints, keys)
    return keys


def _check(
    value: object, node: GType, schema: Schema | None, path: str, out: list[FieldViolation]
) -> None:
    start = len(out)
    if node.kind == "ref":
        # The named type judges the value (nullable when the ref is), custom validators
        # included. The ref's own custom validators (Annotated[Model, AfterValidator(f)]) run
        # only when all of that passed.
        _check(value, _resolve(node, schema), schema, path, out)
        if value is not None and len(out) == start:
            _check_custom(value, node.constraints.custom, path, out)
        return
    if value is None:
        if not node.nullable:
            out.append(FieldViolation(path, describe(node, schema), value))
        return
    kind = node.kind
    if kind == "union":
        for variant in node.variants:
            trial: list[FieldViolation] = []
            _check(value, variant, schema, path, trial)
            if not trial:
                break
        else:
            out.append(FieldViolation(path, describe(node, schema), value))
    elif kind in ("primitive", "literal", "enum"):
        if not _kind_ok(value, node):
            out.append(FieldViolation(path, describe(node, schema), value))
            return
        _check_constraints(value, node, path, out)
    elif kind == "array":
        if not isinstance(value, (list, tuple)):
            out.append(FieldViolation(path, describe(node, schema), value))
            return
        _check_constraints(value, node, path, out)
        assert node.items is not None
        for i, item in enumerate(value):
            _check(item, node.items, schema, f"{path}[{i}]", out)
    elif kind == "map":
        if not isinstance(value, dict):
            out.append(FieldViolation(path, describe(node, schema), value))
            return
        _check_constraints(value, node, path, out)
        assert node.keys is not None and node.items is not None
        key_type = node.keys.name
        for key, item in value.items():
            where = key_path(path, key)
            if not map_key_ok(key, key_type):
                out.append(FieldViolation(where, map_key_text(key_type), key))
                continue
            _check(item, node.items, schema, where, out)
    else:  # object
        if not isinstance(value, dict):
            out.append(FieldViolation(path, describe(node, schema), value))
            return
        _check_object(value, node, schema, path, out)
    if len(out) == start:
        _check_custom(value, node.constraints.custom, path, out)


def _check_constraints(value: object, node: GType, path: str, out: list[FieldViolation]) -> None:
    for key in _present_keys(node):
        if not _constraint_ok(value, node, key):
            out.append(FieldViolation(path, constraint_text(node, key), value))


def _check_object(
    value: dict[Any, Any],
    node: GType,
    schema: Schema | None,
    path: str,
    out: list[FieldViolation],
) -> None:
    for f in node.fields:
        where = field_path(path, f.name)
        if f.name in value:
            _check(value[f.name], f.type, schema, where, out)
        elif f.required:
            out.append(FieldViolation(where, REQUIRED, MISSING))
    names = {f.name for f in node.fields}
    for key, item in value.items():
        if key not in names:
            where = field_path(path, key) if isinstance(key, str) else key_path(path, key)
            out.append(FieldViolation(where, f"no field named {key!r}", item))


def _check_custom(
    value: object, names: tuple[str, ...], path: str, out: list[FieldViolation]
) -> None:
    for name in names:
        failure = run_custom_validator(name, value)
        if failure is not None:
            out.append(FieldViolation(path, failure, value))
