"""Property 9: the analyzer gives a valid GType for every supported annotation."""

from __future__ import annotations

import dataclasses
import enum
import keyword
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal, Optional, Union

import annotated_types as at
import typing_extensions
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import (
    EmailStr,
    Field,
    HttpUrl,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticSerializationError

from runtime.gtype import GType, Schema, analyze_type, canonical_json, fingerprint, validate
from runtime.gtype._model import PRIMITIVES
from tests.properties.test_gtype_strategies import values


class Color(enum.StrEnum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


# Patterns without "$": Python's "$" also matches before a final newline, pydantic's does not.
LEAVES: tuple[Any, ...] = (
    str,
    int,
    float,
    bool,
    bytes,
    datetime,
    date,
    uuid.UUID,
    EmailStr,
    HttpUrl,
    Color,
    Level,
    Literal["a", "b"],
    Literal[1, 2, 3],
    Literal[True],
    Annotated[int, at.Ge(0)],
    Annotated[int, at.Interval(gt=-3, lt=9)],
    Annotated[float, at.Le(2.5)],
    Annotated[str, at.MinLen(1)],
    Annotated[str, StringConstraints(min_length=1, max_length=5)],
    Annotated[str, StringConstraints(pattern=r"^[a-z]")],
    Annotated[str, Field(max_length=3, pattern=r"[0-9]")],
    Annotated[bytes, at.MaxLen(3)],
)
UNION_MEMBERS = (int, str, bool, float, date)
FIELD_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True).filter(
    lambda name: not keyword.iskeyword(name)
)


def annotation_specs(depth: int) -> st.SearchStrategy[Any]:
    """Plain-data descriptions of supported annotations (materialised by ``materialise``)."""
    leaf = st.sampled_from(range(len(LEAVES))).map(lambda i: ("leaf", i))
    union = st.lists(st.sampled_from(UNION_MEMBERS), min_size=2, max_size=3, unique=True).map(
        lambda members: ("union", tuple(members))
    )
    if depth == 0:
        return leaf | union
    inner = annotation_specs(depth - 1)
    # A list item or map value is never nullable: the wire has no per-item presence.
    item = inner.filter(lambda spec: spec[0] != "optional")
    return st.one_of(
        leaf,
        union,
        st.tuples(st.sampled_from(("list", "sequence", "nonempty")), item),
        st.tuples(st.sampled_from(("dict_str", "dict_int", "mapping")), item),
        st.tuples(st.just("optional"), inner),
        model_specs(depth - 1),
    )


def model_specs(depth: int) -> st.SearchStrategy[Any]:
    fields = st.lists(
        st.tuples(FIELD_NAMES, annotation_specs(depth), st.booleans()),
        max_size=4,
        unique_by=lambda f: f[0],
    )
    flavours = st.sampled_from(("pydantic", "dataclass", "typeddict"))
    return st.tuples(st.just("model"), flavours, fields)


def materialise(spec: Any, counter: list[int]) -> Any:
    """The annotation a spec describes; models are named M1, M2, ... in the order built."""
    kind = spec[0]
    if kind == "leaf":
        return LEAVES[spec[1]]
    if kind == "union":
        return Union[spec[1]]  # noqa: UP007  (the typing form, as module code may write it)
    inner = materialise(spec[1], counter) if kind != "model" else None
    if kind == "list":
        return list[inner]  # type: ignore[valid-type]
    if kind == "sequence":
        return Sequence[inner]  # type: ignore[valid-type]
    if kind == "nonempty":
        return Annotated[list[inner], at.MinLen(1)]  # type: ignore[valid-type]
    if kind == "dict_str":
        return dict[str, inner]  # type: ignore[valid-type]
    if kind == "dict_int":
        return dict[int, inner]  # type: ignore[valid-type]
    if kind == "mapping":
        return Mapping[str, inner]  # type: ignore[valid-type]
    if kind == "optional":
        return Optional[inner]  # noqa: UP045
    _, flavour, fields = spec
    counter[0] += 1
    name = f"M{counter[0]}"
    built = [(fname, materialise(fspec, counter), required) for fname, fspec, required in fields]
    if flavour == "pydantic":
        return create_model(
            name,
            **{
                fname: (ann, ...) if required else (Optional[ann], None)  # noqa: UP045
                for fname, ann, required in built
            },
        )
    if flavour == "dataclass":
        ordered = [(f, a) for f, a, r in built if r] + [
            (f, Optional[a], dataclasses.field(default=None))  # noqa: UP045
            for f, a, r in built
            if not r
        ]
        return dataclasses.make_dataclass(name, ordered)
    return typing_extensions.TypedDict(  # type: ignore[operator]
        name,
        {f: a if r else typing_extensions.NotRequired[a] for f, a, r in built},
    )


def well_formed(node: GType, schema: Schema) -> None:
    """Refs resolve, primitives are known, names follow the protobuf naming rules."""
    if node.kind == "ref":
        schema.type(node.name)
    if node.kind == "primitive":
        assert node.name in PRIMITIVES
    if node.kind in ("object", "enum"):
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", node.name)
    for f in node.fields:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", f.name)
        well_formed(f.type, schema)
    for child in (node.items, node.keys, *node.variants):
        if child is not None:
            well_formed(child, schema)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_analyzer_gives_a_valid_gtype_for_every_supported_annotation(
    data: st.DataObject,
) -> None:
    """Property 9: The analyzer gives a valid GType for every supported annotation.

    Random pydantic models, dataclasses and TypedDicts (built with create_model,
    make_dataclass and TypedDict) over every supported annotation analyse to a well-formed
    schema that round-trips through JSON with the same canonical form and fingerprint, again
    on a second analysis. Values the GType accepts are accepted by pydantic, and whatever
    pydantic accepts, dumped with ``mode="json"``, is accepted by ``validate``.
    """
    cls = materialise(data.draw(model_specs(2)), [0])
    types: dict[str, GType] = {}
    root = analyze_type(cls, handler="props.Check", field="request", types=types)
    schema = Schema(module="props", types=tuple(types.values()))

    assert root.kind == "ref" and schema.type(root.name).kind == "object"
    for t in schema.types:
        well_formed(t, schema)
        assert GType.from_json(t.to_json()) == t
    assert Schema.from_json(schema.to_json()) == schema
    again: dict[str, GType] = {}
    analyze_type(cls, handler="props.Check", field="request", types=again)
    assert fingerprint(Schema(module="props", types=tuple(again.values()))) == fingerprint(schema)
    assert canonical_json(Schema.from_json(schema.to_json())) == canonical_json(schema)

    adapter: TypeAdapter[Any] = TypeAdapter(cls)
    for noisy in (False, False, True, True):
        value = data.draw(values(root, schema, noisy=noisy))
        try:
            parsed = adapter.validate_python(value)
        except ValidationError:
            assert noisy, f"pydantic refused a value the GType accepts: {value!r}"
            continue
        try:
            dumped = adapter.dump_python(parsed, mode="json")
        except (PydanticSerializationError, UnicodeDecodeError):
            continue  # bytes that are not UTF-8 have no JSON form in pydantic's default mode
        assert validate(dumped, root, schema) == []
