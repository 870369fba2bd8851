"""Property 12: validation errors carry the path, what was expected, and the actual value."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.gtype import GType, Schema, describe, validate
from tests.properties.test_gtype_strategies import JSON_JUNK, schemas, values


class Alien:
    """A value no GType accepts: not None, not JSON, not any primitive."""

    def __repr__(self) -> str:
        return "<alien>"


@dataclass
class Slot:
    """A place in a value: its path, the container holding it, its key there, and its node."""

    path: str
    container: Any
    key: Any
    node: GType


@dataclass
class ObjectAt:
    path: str
    value: dict[str, Any]
    node: GType


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def entry(path: str, key: Any) -> str:
    return f"{path}[{json.dumps(key)}]" if isinstance(key, str) else f"{path}[{key}]"


def walk(
    value: Any, node: GType, schema: Schema, path: str, slots: list[Slot], objects: list[ObjectAt]
) -> None:
    """Collect every place inside ``value`` (a valid value of ``node``), unions excluded."""
    if node.kind == "ref":
        node = schema.type(node.name)
    if value is None:
        return
    if node.kind == "object":
        objects.append(ObjectAt(path, value, node))
        for f in node.fields:
            if f.name in value:
                slots.append(Slot(join(path, f.name), value, f.name, f.type))
                walk(value[f.name], f.type, schema, join(path, f.name), slots, objects)
    elif node.kind == "array":
        assert node.items is not None
        for i, item in enumerate(value):
            slots.append(Slot(f"{path}[{i}]", value, i, node.items))
            walk(item, node.items, schema, f"{path}[{i}]", slots, objects)
    elif node.kind == "map":
        assert node.items is not None
        for key, item in value.items():
            slots.append(Slot(entry(path, key), value, key, node.items))
            walk(item, node.items, schema, entry(path, key), slots, objects)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_each_injected_fault_is_reported_with_path_expected_and_actual(
    data: st.DataObject,
) -> None:
    """Property 12: Validation errors carry the path, what was expected, and the actual value.

    Starting from a valid value, one fault is injected at a random place: a value no type
    accepts, a required field removed, or an unknown key added. ``validate`` then reports
    exactly one violation, at that place's path, with a readable expectation and the value
    actually found there (``<missing>`` for the removed field).
    """
    schema = data.draw(schemas())
    root = GType.ref(data.draw(st.sampled_from([t.name for t in schema.types])))
    prefix = data.draw(st.sampled_from(("", "request")))
    value = copy.deepcopy(data.draw(values(root, schema)))
    assert validate(value, root, schema, path=prefix) == []

    slots: list[Slot] = []
    objects: list[ObjectAt] = []
    walk(value, root, schema, prefix, slots, objects)
    removable = [(o, f.name) for o in objects for f in o.node.fields if f.required]
    faults = ["alien"] + (["remove"] if removable else []) + (["unknown"] if objects else [])
    fault = data.draw(st.sampled_from(faults))

    if fault == "alien":
        alien = Alien()
        spot = data.draw(st.sampled_from([Slot(prefix, None, None, root), *slots]))
        if spot.container is None:
            value = alien
        else:
            spot.container[spot.key] = alien
        expected = [(spot.path, describe(spot.node, schema), alien)]
    elif fault == "remove":
        obj, name = data.draw(st.sampled_from(removable))
        del obj.value[name]
        expected = [(join(obj.path, name), "a value (field is required)", "<missing>")]
    else:
        obj = data.draw(st.sampled_from(objects))
        junk = data.draw(JSON_JUNK)
        obj.value["zz_unknown"] = junk
        expected = [(join(obj.path, "zz_unknown"), "no field named 'zz_unknown'", junk)]

    found = validate(value, root, schema, path=prefix)
    assert [(v.path, v.expected, v.actual) for v in found] == expected
    for v in found:
        assert isinstance(v.path, str) and v.expected and isinstance(v.expected, str)
        assert v.describe().startswith(f"{v.path or '<root>'}: expected {v.expected}")
