"""The rendered ``.proto`` is the served descriptor: protoc compiles it back to the same bytes.

Workers and reflection serve the ``FileDescriptorProto`` that ``build_file`` makes; the committed
``.proto`` is rendered from it. If protoc reads the rendered text back into anything else, the
two have drifted apart. The schema strategies here are shared with the other wire properties.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import grpc_tools
from google.protobuf import descriptor_pb2
from grpc_tools import protoc
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from runtime.codegen._proto import render_proto
from runtime.gtype import VALIDATE_PROTO_ROOT, Field, GType, Method, Schema
from runtime.wire import FieldLock, build_file, request_message, response_message

PROTOC_INCLUDE = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")

PRIMITIVES = ("str", "int", "float", "bool", "bytes", "datetime", "date")
ENUM_NAMES = ("Color", "Size", "Mood")
TYPE_NAMES = ("Note", "Item", "Owner", "Place", "Price", "Track")
METHOD_NAMES = ("Get", "CreateItem", "ListThings", "Ping")
MODULES = ("demo", "shop", "catalog_items")

LOWER = "abcdefghijklmnopqrstuvwxyz"
words = st.text(LOWER, min_size=1, max_size=6)
field_names = st.builds(
    lambda head, tail: f"{head}_{tail}" if tail else head, words, st.one_of(st.just(""), words)
)
"""``name`` or ``name_part``: lower snake case, as protobuf style asks."""
enum_values = st.lists(words, min_size=1, max_size=4, unique=True)


def _singular(enums: tuple[str, ...], objects: tuple[str, ...]) -> st.SearchStrategy[GType]:
    options: list[st.SearchStrategy[GType]] = [
        st.sampled_from(PRIMITIVES).map(GType.primitive),
        st.lists(words, min_size=1, max_size=3, unique=True).map(lambda vs: GType.literal(*vs)),
    ]
    refs = (*enums, *objects)
    if refs:
        options.append(st.sampled_from(refs).map(GType.ref))
    return st.one_of(options)


def _union(enums: tuple[str, ...], objects: tuple[str, ...]) -> st.SearchStrategy[GType]:
    """2-3 variants with distinct oneof member names: primitives and named types."""
    choices = [GType.primitive(p) for p in PRIMITIVES] + [GType.ref(n) for n in (*enums, *objects)]
    return st.lists(st.sampled_from(choices), min_size=2, max_size=3, unique=True).map(
        lambda vs: GType.union(*vs)
    )


@functools.cache
def _field_type(enums: tuple[str, ...], objects: tuple[str, ...]) -> st.SearchStrategy[GType]:
    """Cached: building strategies costs more than drawing from them."""
    singular = _singular(enums, objects)
    keys = st.sampled_from(("str", "int")).map(GType.primitive)
    return st.one_of(
        singular,
        singular.map(GType.array),
        st.tuples(keys, singular).map(lambda kv: GType.map(kv[0], kv[1])),
        _union(enums, objects),
    )


def wire_names(t: GType) -> list[str]:
    """The protobuf field names an object type declares (oneof members for unions)."""
    from runtime.wire._descriptor import variant_suffix

    out: list[str] = []
    for f in t.fields:
        if f.type.kind == "union":
            out.extend(f"{f.name}_{variant_suffix(v)}" for v in f.type.variants)
        else:
            out.append(f.name)
    return out


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    """A module schema: string enums, acyclic objects (refs point at earlier types), methods."""
    enum_names = draw(st.lists(st.sampled_from(ENUM_NAMES), max_size=2, unique=True))
    types: list[GType] = [GType.enum(name, tuple(draw(enum_values))) for name in enum_names]
    object_names = draw(st.lists(st.sampled_from(TYPE_NAMES), min_size=1, max_size=4, unique=True))
    for i, name in enumerate(object_names):
        names = draw(st.lists(field_names, max_size=6, unique=True))
        fields = [
            Field(
                n,
                draw(_field_type(tuple(enum_names), tuple(object_names[:i]))),
                required=draw(st.booleans()),
            )
            for n in names
        ]
        obj = GType.object(name, fields)
        declared = wire_names(obj)
        assume(len(declared) == len(set(declared)))
        types.append(obj)
    methods = [
        Method(
            m,
            GType.ref(draw(st.sampled_from(object_names))),
            GType.ref(draw(st.sampled_from(object_names))),
        )
        for m in draw(st.lists(st.sampled_from(METHOD_NAMES), min_size=1, max_size=3, unique=True))
    ]
    return Schema(draw(st.sampled_from(MODULES)), tuple(types), tuple(methods))


_TEXT = st.text(st.characters(codec="utf-8"), max_size=8)  # protobuf strings are UTF-8
_INT64 = st.integers(-(2**63), 2**63 - 1)


@functools.cache
def values_of(schema: Schema, t: GType) -> st.SearchStrategy[Any]:
    """Valid JSON-like values of ``t`` in the form the codec gives back.

    Dates are ISO strings and datetimes are aware UTC datetimes (decode's forms). Arrays and
    maps are always present: proto3 cannot tell an absent repeated field from an empty one.
    """
    if t.kind == "primitive":
        return {
            "str": _TEXT,
            "int": _INT64,
            "float": st.floats(allow_nan=False),
            "bool": st.booleans(),
            "bytes": st.binary(max_size=8),
            "datetime": st.datetimes(timezones=st.just(dt.UTC)),
            "date": st.dates().map(lambda d: d.isoformat()),
        }[t.name]
    if t.kind == "literal":
        return st.sampled_from(t.values)
    if t.kind == "ref":
        target = schema.type(t.name)
        if target.kind == "enum":
            return st.sampled_from(target.values)
        return st.deferred(lambda: object_values(schema, target))
    if t.kind == "array":
        assert t.items is not None
        return st.lists(values_of(schema, t.items), max_size=3)
    if t.kind == "map":
        assert t.keys is not None and t.items is not None
        keys = _TEXT if t.keys.name == "str" else _INT64
        return st.dictionaries(keys, values_of(schema, t.items), max_size=3)
    assert t.kind == "union"
    return st.one_of([values_of(schema, v) for v in t.variants])


@functools.cache
def object_values(schema: Schema, t: GType) -> st.SearchStrategy[dict[str, Any]]:
    always = {
        f.name: values_of(schema, f.type)
        for f in t.fields
        if f.required or f.type.kind in ("array", "map")
    }
    maybe = {f.name: values_of(schema, f.type) for f in t.fields if f.name not in always}
    return st.fixed_dictionaries(always, optional=maybe)


def request_values(schema: Schema, method: Method) -> st.SearchStrategy[dict[str, Any]]:
    return object_values(schema, schema.resolve(method.request))


def compile_back(proto_text: str, file_name: str) -> descriptor_pb2.FileDescriptorProto:
    """protoc's own descriptor of ``proto_text`` (protoc runs in process: no subprocess per example)."""
    with tempfile.TemporaryDirectory(prefix="modrpc-wire-") as tmp:
        source = Path(tmp, "src", file_name)
        source.parent.mkdir(parents=True)
        source.write_text(proto_text, encoding="utf-8")
        out = Path(tmp, "set.pb")
        code = protoc.main(
            [
                "protoc",
                f"-I{Path(tmp, 'src')}",
                f"-I{VALIDATE_PROTO_ROOT}",
                f"-I{PROTOC_INCLUDE}",
                f"--descriptor_set_out={out}",
                file_name,
            ]
        )
        assert code == 0, f"protoc refused the rendered file:\n{proto_text}"
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    assert [f.name for f in files] == [file_name]
    return files[0]


@given(schemas())
@settings(max_examples=100, deadline=None)
def test_rendered_proto_compiles_back_to_the_identical_descriptor(schema: Schema) -> None:
    """The ``.proto`` text and the served descriptor are one thing, for every schema shape.

    Each RPC also gets its own ``<Method>Request`` / ``<Method>Response`` messages, as buf's
    RPC_REQUEST_STANDARD_NAME and RPC_REQUEST_RESPONSE_UNIQUE ask.
    """
    fdp = build_file(schema, FieldLock())
    text = render_proto(fdp, header="DO NOT EDIT: generated for a property test.")
    compiled = compile_back(text, fdp.name)
    assert compiled == fdp, f"protoc read back a different descriptor from:\n{text}"
    assert compiled.SerializeToString(deterministic=True) == fdp.SerializeToString(
        deterministic=True
    )
    (service,) = fdp.service
    assert [m.name for m in service.method] == [m.name for m in schema.methods]
    for rpc in service.method:
        assert rpc.input_type == f".{fdp.package}.{request_message(rpc.name)}"
        assert rpc.output_type == f".{fdp.package}.{response_message(rpc.name)}"
