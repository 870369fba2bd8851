"""The diff engine: every change between two schemas, each classified as breaking or not.

A change is judged by the position it is reached from. A field reached from a method's request
uses the request column of the table below, one reached from a response the response column, and
a named type used in both positions is breaking when either column says so. (A named type that no
method reaches is judged in both positions, to be safe.)

================================================  =============  ==============
change                                            in a request   in a response
================================================  =============  ==============
optional field added                              not breaking   not breaking
required field added                              breaking       not breaking
field removed (optional or required)              breaking       breaking
field renamed (a removal plus an addition)        breaking       breaking
optional field becomes required                   breaking       not breaking
required field becomes optional                   not breaking   breaking
nullable field stops being nullable               breaking       not breaking
field becomes nullable                            not breaking   breaking
constraint tightened                              breaking       not breaking
constraint loosened                               not breaking   breaking
enum value added                                  not breaking   breaking
enum value removed                                breaking       not breaking
method removed                                    breaking       breaking
any type change; a reused field or enum number    breaking       breaking
streaming shape changed                           breaking       breaking
method added                                      not breaking   not breaking
================================================  =============  ==============

A method's streaming shape (unary, client, server or bidirectional streaming) is part of its
call: a stub of one shape cannot call the other, so any change of shape is breaking.

This is SPEC.md §4's table, whose rule is Stripe's: a change is breaking when a client pinned to
the old version could send a request it used to send and have it refused or silently lose data
(a removed or renamed request field is dropped on the floor), or could read a response and miss
or misread something it used to get (a removed response field, a null or an enum value it never
saw). A request may widen what it accepts and a response may narrow what it sends. A constraint
whose direction cannot be judged (pattern, format, enum, custom) counts as both tightened and
loosened. Descriptions and defaults are documentation and are not compared.

Paths name the place: ``CreateUser`` (a method), ``CreateUser.request`` (its request type),
``User.email`` (a field of a named type), ``Order.items[]`` (array items), ``Order.tags{}`` (map
values), ``Order.tags{key}`` (map keys) and ``Order.total<1>`` (a union's second variant).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runtime.gtype._model import Constraints, GType, Schema

__all__ = ["CHANGE_KINDS", "Change", "Diff", "diff"]

CHANGE_KINDS: frozenset[str] = frozenset(
    (
        "method_added",
        "method_removed",
        "streaming_changed",
        "field_added",
        "field_removed",
        "became_required",
        "became_optional",
        "nullable_removed",
        "nullable_added",
        "type_changed",
        "enum_value_added",
        "enum_value_removed",
        "constraint_changed",
        "field_number_reused",
    )
)
"""Every ``Change.kind`` the engine reports."""

REQUEST = "request"
RESPONSE = "response"
_BOTH = frozenset((REQUEST, RESPONSE))
_LOWER_BOUNDS = ("min_length", "gt", "ge")
_UPPER_BOUNDS = ("max_length", "lt", "le")
_OPAQUE = ("pattern", "format", "enum", "custom")


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two schemas."""

    path: str
    """Where: ``CreateUser.request.name``, ``User.email``, ``CreateUser``."""
    kind: str
    """One of :data:`CHANGE_KINDS`."""
    breaking: bool
    """Whether a client or server built against the old schema can fail against the new one."""
    detail: str
    """What changed, for people: ``str -> int``, ``value 'red' removed``."""


@dataclass(frozen=True, slots=True)
class Diff:
    """All changes between two schemas, sorted by path, then kind, then detail."""

    changes: tuple[Change, ...]

    @property
    def breaking(self) -> bool:
        """Whether any change is breaking."""
        return any(c.breaking for c in self.changes)

    def breaking_changes(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.breaking)


def diff(
    old: Schema,
    new: Schema,
    *,
    old_numbers: Mapping[str, Mapping[str, int]] | None = None,
    new_numbers: Mapping[str, Mapping[str, int]] | None = None,
) -> Diff:
    """Classify every change from ``old`` to ``new``.

    ``old_numbers`` / ``new_numbers`` map message name -> field name -> field number; a number
    that names a different field in ``new`` than in ``old`` is a ``field_number_reused`` change.

    >>> diff(old_schema, new_schema).breaking  # doctest: +SKIP
    False
    """
    d = _Differ(old, new)
    d.methods()
    d.named_types()
    d.numbers(old_numbers or {}, new_numbers or {})
    return Diff(tuple(sorted(set(d.out), key=lambda c: (c.path, c.kind, c.detail))))


def _positions(schema: Schema) -> dict[str, set[str]]:
    """For each named type, the positions (request, response) some method reaches it from."""
    found: dict[str, set[str]] = {}
    names = {t.name for t in schema.types}

    def walk(node: GType, position: str) -> None:
        if node.kind == "ref":
            seen = found.setdefault(node.name, set())
            if position in seen or node.name not in names:
                return
            seen.add(position)
            walk(schema.type(node.name), position)
            return
        for child in _children(node):
            walk(child, position)

    for m in schema.methods:
        walk(m.request, REQUEST)
        walk(m.response, RESPONSE)
    return found


def _children(node: GType) -> Iterable[GType]:
    yield from (f.type for f in node.fields)
    if node.items is not None:
        yield node.items
    if node.keys is not None:
        yield node.keys
    yield from node.variants


def _shape(node: GType) -> str:
    """A short name for a node's type, for details: ``str``, ``array``, ``ref User``."""
    if node.kind == "primitive":
        return node.name
    if node.kind in ("ref", "enum", "object") and node.name:
        return f"{node.kind} {node.name}"
    if node.kind == "literal":
        return f"literal {list(node.values)!r}"
    return node.kind


class _Differ:
    def __init__(self, old: Schema, new: Schema) -> None:
        self.old = old
        self.new = new
        self.out: list[Change] = []
        old_pos, new_pos = _positions(old), _positions(new)
        self.positions = {
            name: frozenset(old_pos.get(name, set()) | new_pos.get(name, set())) or _BOTH
            for name in {t.name for t in old.types} | {t.name for t in new.types}
        }

    def add(self, path: str, kind: str, breaking: bool, detail: str) -> None:
        self.out.append(Change(path=path, kind=kind, breaking=breaking, detail=detail))

    def methods(self) -> None:
        old = {m.name: m for m in self.old.methods}
        new = {m.name: m for m in self.new.methods}
        for name in old.keys() - new.keys():
            self.add(name, "method_removed", True, f"method {name} removed")
        for name in new.keys() - old.keys():
            self.add(name, "method_added", False, f"method {name} added")
        for name in old.keys() & new.keys():
            o, n = old[name], new[name]
            if o.streaming != n.streaming:
                # A stub of either shape cannot call the other: the call itself no longer fits.
                self.add(name, "streaming_changed", True, f"method {name} changed from {o.streaming} to {n.streaming} streaming")
            self.node(o.request, n.request, f"{name}.request", frozenset((REQUEST,)))
            self.node(o.response, n.response, f"{name}.response", frozenset((RESPONSE,)))

    def named_types(self) -> None:
        old = {t.name: t for t in self.old.types}
        new = {t.name: t for t in self.new.types}
        for name in sorted(old.keys() & new.keys()):
            self.node(old[name], new[name], name, self.positions[name])

    def node(self, o: GType, n: GType, path: str, pos: frozenset[str]) -> None:
        """Compare two nodes at the same place; named types behind refs are compared once."""
        if o.kind != n.kind or (
            o.kind in ("primitive", "ref", "enum", "object") and o.name != n.name
        ):
            self.add(path, "type_changed", True, f"{_shape(o)} -> {_shape(n)}")
            return
        if o.nullable and not n.nullable:
            self.add(path, "nullable_removed", REQUEST in pos, "no longer accepts null")
        elif n.nullable and not o.nullable:
            self.add(path, "nullable_added", RESPONSE in pos, "now accepts null")
        self.constraints(o.constraints, n.constraints, path, pos)
        kind = o.kind
        if kind == "literal":
            if set(o.values) != set(n.values) or len(o.values) != len(n.values):
                self.add(path, "type_changed", True, f"{_shape(o)} -> {_shape(n)}")
        elif kind == "enum":
            self.enum_values(o, n, path, pos)
        elif kind == "array":
            assert o.items is not None and n.items is not None
            self.node(o.items, n.items, f"{path}[]", pos)
        elif kind == "map":
            assert o.keys is not None and n.keys is not None
            assert o.items is not None and n.items is not None
            self.node(o.keys, n.keys, f"{path}{{key}}", pos)
            self.node(o.items, n.items, f"{path}{{}}", pos)
        elif kind == "union":
            if len(o.variants) != len(n.variants):
                shapes = (
                    " | ".join(_shape(v) for v in o.variants),
                    " | ".join(_shape(v) for v in n.variants),
                )
                self.add(path, "type_changed", True, f"{shapes[0]} -> {shapes[1]}")
                return
            for i, (ov, nv) in enumerate(zip(o.variants, n.variants, strict=True)):
                self.node(ov, nv, f"{path}<{i}>", pos)
        elif kind == "object":
            self.fields(o, n, path, pos)

    def fields(self, o: GType, n: GType, path: str, pos: frozenset[str]) -> None:
        old = {f.name: f for f in o.fields}
        new = {f.name: f for f in n.fields}
        for name, f in old.items():
            where = f"{path}.{name}"
            if name not in new:
                what = "required" if f.required else "optional"
                self.add(where, "field_removed", True, f"{what} field removed")
                continue
            g = new[name]
            if g.required and not f.required:
                self.add(where, "became_required", REQUEST in pos, "optional -> required")
            elif f.required and not g.required:
                self.add(where, "became_optional", RESPONSE in pos, "required -> optional")
            self.node(f.type, g.type, where, pos)
        for name, g in new.items():
            if name not in old:
                what = "required" if g.required else "optional"
                self.add(
                    f"{path}.{name}",
                    "field_added",
                    g.required and REQUEST in pos,
                    f"{what} field added",
                )

    def enum_values(self, o: GType, n: GType, path: str, pos: frozenset[str]) -> None:
        for value in o.values:
            if value not in n.values:
                self.add(path, "enum_value_removed", REQUEST in pos, f"value {value!r} removed")
        for value in n.values:
            if value not in o.values:
                self.add(path, "enum_value_added", RESPONSE in pos, f"value {value!r} added")

    def constraints(self, o: Constraints, n: Constraints, path: str, pos: frozenset[str]) -> None:
        for key in _LOWER_BOUNDS + _UPPER_BOUNDS + _OPAQUE:
            before, after = getattr(o, key), getattr(n, key)
            if before == after:
                continue
            if key in _OPAQUE:
                tighter = looser = True
            else:
                upper = key in _UPPER_BOUNDS
                if before is None or after is None:
                    tighter, looser = after is not None, before is not None
                else:
                    tighter = after < before if upper else after > before
                    looser = not tighter
            breaking = (tighter and REQUEST in pos) or (looser and RESPONSE in pos)
            self.add(path, "constraint_changed", breaking, f"{key}: {before!r} -> {after!r}")

    def numbers(
        self, old: Mapping[str, Mapping[str, int]], new: Mapping[str, Mapping[str, int]]
    ) -> None:
        for message in sorted(old.keys() & new.keys()):
            by_number = {number: name for name, number in old[message].items()}
            for name, number in new[message].items():
                previous = by_number.get(number)
                if previous is not None and previous != name:
                    self.add(
                        f"{message}.{name}",
                        "field_number_reused",
                        True,
                        f"field number {number} belonged to {previous!r}",
                    )
                was = old[message].get(name)
                if was is not None and was != number:
                    self.add(
                        f"{message}.{name}",
                        "type_changed",
                        True,
                        f"field number {was} -> {number}",
                    )
