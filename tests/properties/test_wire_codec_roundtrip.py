"""Property 18: module calls serialise and deserialise automatically, losing nothing."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.gtype import Schema, validate
from runtime.wire import FieldLock, WireVersion, build_file, request_message
from tests.properties.test_wire_descriptor_protoc import request_values, schemas


@st.composite
def schema_and_request(draw: st.DrawFn) -> tuple[Schema, str, dict[str, Any]]:
    schema = draw(schemas())
    method = draw(st.sampled_from(schema.methods))
    return schema, method.name, draw(request_values(schema, method))


@given(schema_and_request())
@settings(max_examples=100, deadline=None)
def test_codec_round_trip_is_identity_for_valid_values(
    case: tuple[Schema, str, dict[str, Any]],
) -> None:
    """Property 18: Module calls serialise and deserialise automatically.

    For every schema shape (scalars, optional and required fields, arrays, maps, string enums,
    nested refs, unions of refs and primitives), a valid request dict encodes to bytes that
    decode to an equal dict, and encoding that dict again gives the same message.
    """
    schema, method, value = case
    fdp = build_file(schema, FieldLock())
    method_def = schema.method(method)
    assert validate(value, method_def.request, schema) == [], "the strategy must draw valid values"
    wire = WireVersion(schema, fdp)
    name = request_message(method)
    data = wire.encode(name, value)
    decoded = wire.decode(name, data)
    assert decoded == value
    # What comes out goes back in as the same message (map order aside, bytes may differ).
    cls = wire.request_class(method)
    assert cls.FromString(wire.encode(name, decoded)) == cls.FromString(data)
