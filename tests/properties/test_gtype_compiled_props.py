"""Property 13: the compiled check agrees with ``validate`` on every value."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.gtype import GType, compiled, validate
from tests.properties.test_gtype_strategies import any_values, schemas


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_compiled_check_agrees_with_validate_on_every_value(data: st.DataObject) -> None:
    """Property 13: A generated validator agrees with ``validate`` on every value.

    For each named type of a random schema (recursive objects, enums, unions, maps, arrays,
    nullable refs, constraints and custom validators), values valid, noisy, mutated or junk: the
    compiled check says valid exactly when ``validate`` finds no violation.
    """
    schema = data.draw(schemas())
    for t in schema.types:
        for node in (GType.ref(t.name), GType.ref(t.name).with_nullable(True)):
            check = compiled(node, schema)
            for _ in range(3):
                value = data.draw(any_values(node, schema))
                assert check(value) == (validate(value, node, schema) == []), value


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_compiled_check_agrees_on_field_types_met_alone(data: st.DataObject) -> None:
    """Property 13: the same agreement node by node, for every field type of a random schema."""
    schema = data.draw(schemas())
    for t in schema.types:
        for f in t.fields:
            value = data.draw(any_values(f.type, schema))
            assert compiled(f.type, schema)(value) == (validate(value, f.type, schema) == []), (f, value)
