"""Property 13: the generated validator (the ``buf.validate`` rules of the generated ``.proto``)
agrees with ``validate`` on every message.

The runtime validates with GType; the ``.proto`` publishes the same constraints as protovalidate
rules for every other client. A random schema of the shapes the wire carries gets its descriptor
(as ``modrpc gen`` builds it); random messages, valid and invalid, are encoded, and then
protovalidate judges the message while ``validate`` judges what the worker decodes from it. Both
must find the same fields at fault.

Not published, and so not drawn here: custom validators, the calendar validity of ``date``
strings (see ``runtime/wire/_rules.py``).
"""

from __future__ import annotations

import json
import string
from typing import Any

import protovalidate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.gtype import Constraints, Field, GType, Method, Schema, validate
from runtime.wire import FieldLock, WireVersion, build_file, request_message
from tests.properties.test_gtype_strategies import (
    FORMAT_VALUES,
    PATTERNS,
    SAFE_INTS,
    SAFE_TEXT,
    values,
)

NAMES = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True).filter(lambda n: n not in ("stray", "in", "is"))


@st.composite
def scalars(draw: st.DrawFn) -> GType:
    """A primitive with the constraints the rules publish (no custom validators, no dates)."""
    name = draw(st.sampled_from(("str", "int", "float", "bool", "bytes", "datetime")))
    c: dict[str, Any] = {}
    if name == "str":
        choice = draw(st.sampled_from(("none", "length", "pattern", "format", "enum")))
        if choice == "length":
            c["min_length"] = low = draw(st.integers(0, 3))
            c["max_length"] = draw(st.none() | st.integers(max(low, 1), 6))
        elif choice == "pattern":
            c["pattern"] = draw(st.sampled_from((*PATTERNS, r"^\d{2}$", r"^a.c$")))
        elif choice == "format":
            c["format"] = draw(st.sampled_from(sorted(FORMAT_VALUES)))
        elif choice == "enum":
            c["enum"] = tuple(draw(st.lists(SAFE_TEXT, min_size=1, max_size=3, unique=True)))
    elif name in ("int", "float"):
        low = draw(st.integers(-20, 20))
        if draw(st.booleans()):
            bound = low if name == "int" and draw(st.booleans()) else low + 0.5
            c[draw(st.sampled_from(("gt", "ge")))] = bound
        if draw(st.booleans()):
            c[draw(st.sampled_from(("lt", "le")))] = low + draw(st.integers(3, 30))
        if name == "int" and not c and draw(st.booleans()):
            c["enum"] = tuple(draw(st.lists(SAFE_INTS, min_size=1, max_size=3, unique=True)))
    elif name == "bytes" and draw(st.booleans()):
        c["min_length"] = draw(st.integers(0, 2))
        c["max_length"] = draw(st.integers(max(c["min_length"], 1), 4))
    return GType.primitive(name, constraints=Constraints(**c))


def literals() -> st.SearchStrategy[GType]:
    return st.builds(
        lambda vs: GType.literal(*vs),
        st.lists(SAFE_TEXT, min_size=1, max_size=3, unique=True)
        | st.lists(SAFE_INTS, min_size=1, max_size=3, unique=True)
        | st.sampled_from(([True], [False])),
    )


def singles(refs: tuple[str, ...]) -> st.SearchStrategy[GType]:
    leaves = [scalars(), literals()]
    if refs:
        leaves.append(st.sampled_from(refs).map(GType.ref))
    return st.one_of(leaves)


@st.composite
def field_types(draw: st.DrawFn, refs: tuple[str, ...]) -> GType:
    kind = draw(st.sampled_from(("single", "single", "array", "map", "union")))
    if kind == "single":
        return draw(singles(refs)).with_nullable(draw(st.booleans()))
    if kind == "array":
        low = draw(st.none() | st.integers(0, 2))
        high = draw(st.none() | st.integers(max(low or 0, 1), 4))
        return GType.array(draw(singles(refs)), constraints=Constraints(min_length=low, max_length=high))
    if kind == "map":
        high = draw(st.none() | st.integers(1, 3))
        key = GType.primitive(draw(st.sampled_from(("str", "int"))))
        return GType.map(key, draw(singles(refs)), constraints=Constraints(max_length=high))
    # A union's members are named by their type, so its variants have distinct types.
    variants = draw(
        st.lists(
            st.sampled_from(("str", "int", "float", "bool", *refs)), min_size=2, max_size=3, unique=True
        )
    )
    nodes = [
        GType.ref(v) if v in refs else (draw(scalars().filter(lambda n, v=v: n.name == v)))
        for v in variants
    ]
    return GType.union(*nodes, nullable=draw(st.booleans()))


@st.composite
def wire_schemas(draw: st.DrawFn) -> Schema:
    types: list[GType] = []
    for i in range(draw(st.integers(0, 2))):
        enum_values = draw(
            st.lists(SAFE_TEXT, min_size=1, max_size=3, unique=True)
            | st.lists(st.integers(1, 9), min_size=1, max_size=3, unique=True)
        )
        types.append(GType.enum(f"Enum{i}", enum_values))
    for i in range(draw(st.integers(1, 3))):
        refs = tuple(t.name for t in types)
        names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
        fields = [Field(n, draw(field_types(refs)), required=draw(st.booleans())) for n in names]
        types.append(GType.object(f"Type{i}", fields))
    top = types[-1].name
    return Schema("agree", tuple(types), (Method("Call", GType.ref(top), GType.ref(top)),))


def protovalidate_paths(violations: list[Any], members: dict[str, str]) -> set[str]:
    """Violation field paths written as ``validate`` writes them (``a.b[2]``, ``m["k"]``).

    ``validate`` reports a union that no variant accepts at the union itself, so a fault found
    inside a union's member is cut back to the union's path.
    """
    out = set()
    for v in violations:
        path = ""
        for element in v.proto.field.elements:
            name = members.get(element.field_name, element.field_name)
            path = f"{path}.{name}" if path else name
            if element.field_name in members:
                break
            subscript = element.subscript
            if subscript is not None and subscript.field == "string_key":
                path += f"[{json.dumps(subscript.value, ensure_ascii=False)}]"
            elif subscript is not None:
                path += f"[{subscript.value}]"
        out.add(path)
    return out


def union_members(schema: Schema) -> dict[str, str]:
    """A oneof member's protobuf name → its union field's name (``tag_str`` → ``tag``)."""
    from runtime.wire._descriptor import variant_suffix

    return {
        f"{f.name}_{variant_suffix(v)}": f.name
        for t in schema.types
        for f in t.fields
        if f.type.kind == "union"
        for v in f.type.variants
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_protovalidate_and_validate_find_the_same_faults(data: st.DataObject) -> None:
    """Property 13: A generated validator agrees with `validate` on every value.

    The generated validator is the ``buf.validate`` rules in the generated ``.proto``: for
    messages built from valid values and from noisy ones (out of bounds, too long, wrong format,
    missing required fields), protovalidate and ``validate`` (run on what the worker decodes)
    report violations at exactly the same field paths.
    """
    schema = data.draw(wire_schemas())
    wire = WireVersion(schema, build_file(schema, FieldLock()))
    name = request_message("Call")
    node = schema.method("Call").request
    members = union_members(schema)
    # A validator compiles each message's rules once, by message name; every example reuses
    # the names (as every version of a module does), so each gets a validator of its own.
    validator = protovalidate.Validator()
    for noisy in (False, True, True, True):
        value = data.draw(values(node, schema, noisy=noisy))
        try:
            payload = wire.encode(name, value)
        except (TypeError, ValueError, KeyError):
            continue  # a value protobuf cannot carry never reaches either validator
        message = wire.message_class(name).FromString(payload)
        ours = {v.path for v in validate(wire.to_dict(name, message), node, schema)}
        theirs = protovalidate_paths(validator.collect_violations(message), members)
        assert ours == theirs, (value, ours, theirs)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(FORMAT_VALUES)), st.text(string.printable, max_size=20) | st.sampled_from(
    ["a@b", "a@b.", "urn:isbn:0451450523", "https://x/%zz", "00000000-0000-0000-0000-00000000000g"]
))
def test_format_checks_are_protovalidates_own(fmt: str, text: str) -> None:
    """A string format is judged exactly as the published ``string.email/uuid/uri`` rule judges it."""
    node = GType.primitive("str", constraints=Constraints(format=fmt))
    schema = Schema("agree", (GType.object("Box", [Field("v", node)]),), (Method("Call", GType.ref("Box"), GType.ref("Box")),))
    wire = WireVersion(schema, build_file(schema, FieldLock()))
    message = wire.message_class(request_message("Call"))(v=text)
    found = protovalidate.Validator().collect_violations(message)
    assert bool(validate({"v": text}, GType.ref("Box"), schema)) == bool(found)
