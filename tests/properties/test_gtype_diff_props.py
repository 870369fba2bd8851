"""Property 14: the diff classifies every change correctly."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.gtype import Field, GType, Method, Schema, diff
from tests.properties.test_gtype_strategies import schemas

REQUEST, RESPONSE = "request", "response"
Expected = list[tuple[str, str, bool]]


def reached(schema: Schema) -> dict[str, set[str]]:
    """Named type -> the positions (request/response) some method reaches it from."""
    out: dict[str, set[str]] = defaultdict(set)
    names = {t.name for t in schema.types}

    def go(node: GType, pos: str) -> None:
        if node.kind == "ref":
            if pos in out[node.name] or node.name not in names:
                return
            out[node.name].add(pos)
            go(schema.type(node.name), pos)
            return
        for child in [f.type for f in node.fields] + [node.items, node.keys, *node.variants]:
            if child is not None:
                go(child, pos)

    for m in schema.methods:
        go(m.request, REQUEST)
        go(m.response, RESPONSE)
    return out


def with_type(schema: Schema, new: GType) -> Schema:
    types = tuple(new if t.name == new.name else t for t in schema.types)
    return Schema(module=schema.module, types=types, methods=schema.methods)


def with_field(obj: GType, index: int, field: Field | None) -> GType:
    fields = list(obj.fields)
    if field is None:
        del fields[index]
    else:
        fields[index] = field
    return dataclasses.replace(obj, fields=tuple(fields))


@st.composite
def mutations(draw: st.DrawFn, old: Schema) -> tuple[Schema, dict[str, Any], Expected]:
    """One change from the table applied to ``old``: (new schema, numbers, expected changes).

    The expected breaking flag is worked out here from SPEC §4's table and the positions the
    changed type is reached from in either schema.
    """
    objects = [t for t in old.types if t.kind == "object"]
    enums = [t for t in old.types if t.kind == "enum"]
    options = ["method_added", "method_removed", "field_added"]
    if any(t.fields for t in objects):
        options += ["field_removed", "flip_required", "flip_nullable", "type_changed"]
        options += ["field_number_reused"]
    if any(f.type.kind in ("array", "map") for t in objects for f in t.fields):
        options.append("nested_type_changed")
    if enums:
        options += ["enum_value_added", "enum_value_removed"]
    what = draw(st.sampled_from(options))
    numbers: dict[str, Any] = {}

    def pos_of(name: str, new: Schema) -> set[str]:
        found = reached(old)[name] | reached(new)[name]
        return found or {REQUEST, RESPONSE}

    if what == "method_added":
        target = GType.ref(draw(st.sampled_from(objects)).name)
        new = dataclasses.replace(old, methods=(*old.methods, Method("Zz", target, target)))
        return new, numbers, [("Zz", "method_added", False)]
    if what == "method_removed":
        gone = draw(st.sampled_from(old.methods))
        new = dataclasses.replace(old, methods=tuple(m for m in old.methods if m is not gone))
        return new, numbers, [(gone.name, "method_removed", True)]
    if what.startswith("enum_value"):
        enum = draw(st.sampled_from(enums))
        if what == "enum_value_removed" and len(enum.values) > 1:
            kept = enum.values[1:]
            new = with_type(old, dataclasses.replace(enum, values=kept))
            return new, numbers, [(enum.name, "enum_value_removed", REQUEST in pos_of(enum.name, new))]
        extra: Any = "zz_new" if isinstance(enum.values[0], str) else 999
        new = with_type(old, dataclasses.replace(enum, values=(*enum.values, extra)))
        return new, numbers, [(enum.name, "enum_value_added", RESPONSE in pos_of(enum.name, new))]

    obj = draw(
        st.sampled_from([t for t in objects if t.fields] if what != "field_added" else objects)
    )
    index = draw(st.integers(0, max(len(obj.fields) - 1, 0)))
    if what == "field_added":
        required = draw(st.booleans())
        added = Field("zz_new", GType.primitive("str"), required=required)
        new = with_type(old, dataclasses.replace(obj, fields=(*obj.fields, added)))
        path = f"{obj.name}.zz_new"
        return new, numbers, [(path, "field_added", required and REQUEST in pos_of(obj.name, new))]

    f = obj.fields[index]
    path = f"{obj.name}.{f.name}"
    if what == "field_removed":
        new = with_type(old, with_field(obj, index, None))
        return new, numbers, [(path, "field_removed", True)]
    if what == "flip_required":
        new = with_type(
            old, with_field(obj, index, dataclasses.replace(f, required=not f.required))
        )
        pos = pos_of(obj.name, new)
        if f.required:
            return new, numbers, [(path, "became_optional", RESPONSE in pos)]
        return new, numbers, [(path, "became_required", REQUEST in pos)]
    if what == "flip_nullable":
        flipped = dataclasses.replace(f, type=f.type.with_nullable(not f.type.nullable))
        new = with_type(old, with_field(obj, index, flipped))
        if f.type.nullable:
            return new, numbers, [(path, "nullable_removed", REQUEST in pos_of(obj.name, new))]
        return new, numbers, [(path, "nullable_added", RESPONSE in pos_of(obj.name, new))]
    if what == "type_changed":
        other = "str" if f.type.kind == "primitive" and f.type.name == "bool" else "bool"
        changed = dataclasses.replace(f, type=GType.primitive(other))
        new = with_type(old, with_field(obj, index, changed))
        return new, numbers, [(path, "type_changed", True)]
    if what == "nested_type_changed":
        index, f = draw(
            st.sampled_from(
                [(i, g) for i, g in enumerate(obj.fields) if g.type.kind in ("array", "map")]
            )
            if any(g.type.kind in ("array", "map") for g in obj.fields)
            else st.nothing()
        )
        assert f.type.items is not None
        items = f.type.items
        other = "str" if items.kind == "primitive" and items.name == "bool" else "bool"
        changed = dataclasses.replace(
            f, type=dataclasses.replace(f.type, items=GType.primitive(other))
        )
        new = with_type(old, with_field(obj, index, changed))
        suffix = "[]" if f.type.kind == "array" else "{}"
        return new, numbers, [(f"{obj.name}.{f.name}{suffix}", "type_changed", True)]
    # field_number_reused: the field is removed and a new one takes its number.
    new_field = Field("zz_new", GType.primitive("str"), required=False)
    fields = [*obj.fields[:index], *obj.fields[index + 1 :], new_field]
    new = with_type(old, dataclasses.replace(obj, fields=tuple(fields)))
    numbers["old"] = {obj.name: {g.name: i + 1 for i, g in enumerate(obj.fields)}}
    numbers["new"] = {
        obj.name: {
            **{g.name: i + 1 for i, g in enumerate(obj.fields) if g is not f},
            "zz_new": index + 1,
        }
    }
    return (
        new,
        numbers,
        [
            (path, "field_removed", True),
            (f"{obj.name}.zz_new", "field_added", False),
            (f"{obj.name}.zz_new", "field_number_reused", True),
        ],
    )


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_diff_classifies_each_change_by_the_table(data: st.DataObject) -> None:
    """Property 14: The diff classifies every change correctly.

    A random schema gets one random change from SPEC §4's table (methods, fields, required and
    nullable flips, type changes, enum values, reused field numbers). The diff reports exactly
    that change, at its path, with the breaking flag the table gives for the positions (request,
    response or both) the changed type is reached from; the diff as a whole is breaking iff
    one of its changes is.
    """
    old = data.draw(schemas())
    new, numbers, expected = data.draw(mutations(old))
    result = diff(old, new, old_numbers=numbers.get("old"), new_numbers=numbers.get("new"))
    assert [(c.path, c.kind, c.breaking) for c in result.changes] == sorted(expected)
    assert result.breaking == any(b for _, _, b in expected)
    assert all(c.detail for c in result.changes)


@settings(max_examples=100, deadline=None)
@given(schemas())
def test_a_schema_has_no_changes_against_itself(schema: Schema) -> None:
    """Property 14 (no false alarms): a schema, and its JSON round trip, differ in nothing."""
    assert diff(schema, schema).changes == ()
    assert diff(schema, Schema.from_json(schema.to_json())).changes == ()
