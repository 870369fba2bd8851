"""A GType's verdict, compiled: whether a value is valid, in one pass of closures built once.

:func:`~runtime.gtype.validate` walks the schema for every value and builds every field's path
as it goes, because it reports every violation with its path. Most values are valid, so a
worker first asks the compiled check, which answers only *valid or not*, and runs ``validate``
for the full report only when the answer is *not*::

    valid = compiled(node, schema)     # once per message type
    if not valid(value):               # per message
        problems = validate(value, node, schema)

It follows ``validate`` rule for rule (kind, constraints, children, then custom validators), so
the two agree on every value: a property test holds them to it.
"""

from __future__ import annotations

from collections.abc import Callable

from runtime.gtype._checks import is_date, map_key_ok, run_custom_validator
from runtime.gtype._model import GType, Schema
from runtime.gtype._validate import (
    PRIMITIVE_KINDS,
    _constraint_ok,
    _present_keys,
    _resolve,
    same_scalar,
)

__all__ = ["Check", "compiled"]

Check = Callable[[object], bool]
"""True when the value has no violation."""


def compiled(node: GType, schema: Schema | None = None) -> Check:
    """The check of ``node``: ``compiled(node, schema)(value)`` is ``not validate(value, node, schema)``.

    Raises ``KeyError`` for a ref the schema cannot resolve, as ``validate`` does.
    """
    return _Compiler(schema).check(node)


class _Compiler:
    """Builds the closures; a named type referred to again (itself, recursively) is built once."""

    def __init__(self, schema: Schema | None) -> None:
        self.schema = schema
        self.named: dict[tuple[str, bool], Check] = {}

    def check(self, node: GType) -> Check:
        if node.kind == "ref":
            return self._ref(node)
        kind = self._kind(node)
        custom = node.constraints.custom
        inner = kind
        if custom:
            def with_custom(value: object) -> bool:
                return kind(value) and (value is None or _custom_ok(value, custom))

            inner = with_custom
        if not node.nullable:
            return inner

        def nullable(value: object) -> bool:
            return value is None or inner(value)

        return nullable

    def _ref(self, node: GType) -> Check:
        key = (node.name, node.nullable)
        built = self.named.get(key)
        if built is None:
            cell: list[Check] = []

            def later(value: object) -> bool:  # a type that contains itself: bound once built
                return cell[0](value)

            self.named[key] = later
            target = self.check(_resolve(node, self.schema))
            custom = node.constraints.custom
            if custom:
                def with_custom(value: object) -> bool:
                    return target(value) and (value is None or _custom_ok(value, custom))

                cell.append(with_custom)
            else:
                cell.append(target)
            built = self.named[key] = cell[0]
        return built

    def _kind(self, node: GType) -> Check:
        kind = node.kind
        if kind == "union":
            variants = tuple(self.check(v) for v in node.variants)
            return lambda value: value is not None and any(v(value) for v in variants)
        if kind in ("primitive", "literal", "enum"):
            return _scalar(node)
        if kind == "array":
            items = self.check(_part(node.items))
            fits = _constraints(node)
            return lambda value: (
                isinstance(value, (list, tuple)) and fits(value) and all(items(item) for item in value)
            )
        if kind == "map":
            keys = _part(node.keys).name
            entries = self.check(_part(node.items))
            fits = _constraints(node)
            return lambda value: (
                isinstance(value, dict)
                and fits(value)
                and all(map_key_ok(k, keys) and entries(v) for k, v in value.items())
            )
        return self._object(node)

    def _object(self, node: GType) -> Check:
        fields = tuple((f.name, self.check(f.type)) for f in node.fields)
        required = tuple(f.name for f in node.fields if f.required)
        names = frozenset(name for name, _ in fields)

        def valid(value: object) -> bool:
            if not isinstance(value, dict):
                return False
            for name, check in fields:
                if name in value and not check(value[name]):
                    return False
            for name in required:
                if name not in value:
                    return False
            return names.issuperset(value)

        return valid


def _part(node: GType | None) -> GType:
    assert node is not None, "an array or map node without its parts"
    return node


def _scalar(node: GType) -> Check:
    is_kind = _kind_check(node)
    fits = _constraints(node)
    return lambda value: value is not None and is_kind(value) and fits(value)


def _kind_check(node: GType) -> Check:
    """``validate``'s kind rule for a primitive, literal or enum node, picked once."""
    if node.kind in ("literal", "enum"):
        allowed = node.values
        return lambda value: same_scalar(value, allowed)
    return PRIMITIVE_KINDS.get(node.name, is_date)


def _constraints(node: GType) -> Check:
    keys = _present_keys(node)
    if not keys:
        return _always
    return lambda value: all(_constraint_ok(value, node, key) for key in keys)


def _always(value: object) -> bool:
    return True


def _custom_ok(value: object, names: tuple[str, ...]) -> bool:
    return all(run_custom_validator(name, value) is None for name in names)
