"""Annotated metadata to GType constraints, for the analyzer.

``Annotated[X, ...]`` and pydantic's field metadata carry constraints in several spellings:
annotated_types (``Ge``, ``Len``, ``Interval``...), pydantic's ``Field(...)`` and
``StringConstraints`` (which become annotated_types objects plus a general-metadata object for
``pattern``), and validator objects. This module reads them all into :class:`Constraints`.

* Bounds and lengths map one to one, and are refused on a node they do not apply to (``ge`` on a
  string), as pydantic would refuse them at run time.
* ``AfterValidator(fn)`` becomes the custom constraint ``module:qualname`` and is registered, so
  ``validate`` can run it. Lambdas have no stable name and are refused.
* Before, plain and wrap validators and serializers are refused: they change what the wire may
  carry, so a GType would describe the wrong input.
* Metadata that only steers pydantic's coercion (``Strict``, ``strip_whitespace``...) is ignored;
  the coerced value still fits the GType.
* Other annotated_types constraints (``MultipleOf``, ``Predicate``, ``Timezone``...) are refused.
* Any other object is left alone: ``Annotated`` exists to carry metadata for other tools.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

import annotated_types as at
from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainSerializer,
    PlainValidator,
    WrapSerializer,
    WrapValidator,
)
from pydantic.fields import FieldInfo
from pydantic.types import AllowInfNan, Discriminator, FailFast, Strict, UuidVersion

from runtime.gtype._buf_validate import pattern_error
from runtime.gtype._checks import register_custom_validator
from runtime.gtype._errors import UnsupportedType
from runtime.gtype._model import GType

__all__ = ["Fail", "callable_name", "constrain", "register_pydantic_validator"]

Fail: TypeAlias = Callable[[str, object, str], UnsupportedType]
"""Builds the error for (field path, offending annotation, reason); the analyzer's ``fail``."""

_IGNORED_METADATA: tuple[type, ...] = (Strict, AllowInfNan, FailFast, UuidVersion, Discriminator)
_IGNORED_GENERAL_KEYS = frozenset(
    (
        "strict",
        "strip_whitespace",
        "to_upper",
        "to_lower",
        "allow_inf_nan",
        "union_mode",
        "fail_fast",
        "coerce_numbers_to_str",
    )
)
_BOUNDS = ((at.Gt, "gt"), (at.Ge, "ge"), (at.Lt, "lt"), (at.Le, "le"))


def constrain(
    node: GType, meta: Sequence[object], path: str, fail: Fail, custom: tuple[str, ...] = ()
) -> GType:
    """``node`` with the constraints in ``meta`` (and the custom names ``custom``) added."""
    updates: dict[str, Any] = {}
    names = list(custom)
    for m in _flatten(meta):
        _read(m, path, updates, names, fail)
    if not updates and not names:
        return node
    for key, value in updates.items():
        _check_applies(node, key, value, path, fail)
    merged = dataclasses.replace(
        node.constraints, **updates, custom=node.constraints.custom + tuple(names)
    )
    return dataclasses.replace(node, constraints=merged)


def register_pydantic_validator(
    name: str, fn: Callable[..., object], path: str, fail: Fail
) -> None:
    """Register a pydantic-style validator: it passes by returning anything, fails by raising.

    Only validators of one argument (the value) can run outside pydantic; one that wants
    pydantic's ``ValidationInfo`` is refused.
    """
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):  # builtins without a signature
        params = []
    if len(params) != 1:
        raise fail(path, fn, "custom validators must take exactly one argument (the value)")

    def check(value: object) -> bool:
        fn(value)
        return True

    register_custom_validator(name, check)


def callable_name(fn: object) -> str | None:
    """``module:qualname`` of a function, or None when it has no stable name (a lambda)."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<lambda>" in qualname:
        return None
    return f"{module}:{qualname}"


def _flatten(meta: Iterable[object]) -> Iterable[object]:
    """Metadata with groups (``Len``, ``Interval``, ``StringConstraints``, ``Field``) unrolled."""
    for m in meta:
        if isinstance(m, FieldInfo):
            yield from _flatten(m.metadata)
        elif isinstance(m, at.GroupedMetadata):
            yield from _flatten(m)
        else:
            yield m


def _read(m: object, path: str, updates: dict[str, Any], names: list[str], fail: Fail) -> None:
    for cls, key in _BOUNDS:
        if isinstance(m, cls):
            updates[key] = getattr(m, key)
            return
    if isinstance(m, at.MinLen):
        updates["min_length"] = m.min_length
    elif isinstance(m, at.MaxLen):
        updates["max_length"] = m.max_length
    elif isinstance(m, AfterValidator):
        name = callable_name(m.func)
        if name is None:
            raise fail(path, m, "custom validators must be named functions (not lambdas)")
        register_pydantic_validator(name, m.func, path, fail)
        names.append(name)
    elif isinstance(m, (BeforeValidator, PlainValidator, WrapValidator)):
        raise fail(path, m, "only after-validators can be represented")
    elif isinstance(m, (PlainSerializer, WrapSerializer)):
        raise fail(path, m, "serializers change the wire data; not supported")
    elif isinstance(m, _IGNORED_METADATA):
        return
    elif isinstance(m, at.BaseMetadata) and type(m).__name__ == "_PydanticGeneralMetadata":
        for key, value in vars(m).items():
            if value is None or key in _IGNORED_GENERAL_KEYS:
                continue
            if key != "pattern":
                raise fail(path, m, f"the constraint {key!r} is not supported")
            updates["pattern"] = value
    elif isinstance(m, at.BaseMetadata):
        raise fail(path, m, "this constraint is not supported")


def _check_applies(node: GType, key: str, value: object, path: str, fail: Fail) -> None:
    primitive = node.name if node.kind == "primitive" else ""
    if key in ("gt", "ge", "lt", "le"):
        ok = primitive in ("int", "float") and _is_number(value)
    elif key in ("min_length", "max_length"):
        sized = node.kind in ("array", "map") or primitive in ("str", "bytes")
        ok = sized and isinstance(value, int) and not isinstance(value, bool)
    else:  # pattern
        ok = primitive == "str"
        problem = pattern_error(value) if ok and isinstance(value, str) else None
        if problem is not None:
            # The pattern is published as a buf.validate rule, which every protovalidate
            # implementation runs as RE2: no lookaround, no backreferences.
            raise fail(path, value, f"pattern is not an RE2 expression buf.validate can run: {problem}")
    if not ok:
        raise fail(path, value, f"the constraint {key} does not apply to {primitive or node.kind}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
