"""Field numbers survive every version: stable, reserved once removed, never reused.

A module's history is drawn as a sequence of field sets for its messages; each version is
built with the module's one lock and the descriptors of the versions before it, as
``modrpc gen`` does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.gtype import Field, GType, Method, Schema
from runtime.wire import FieldLock, build_file

NAMES = ("id", "name", "email", "given_name", "family_name", "age", "tags", "created_at", "note")
TYPES = (
    GType.primitive("str"),
    GType.primitive("int"),
    GType.primitive("datetime"),
    GType.array(GType.primitive("str")),
)

field_sets = st.lists(
    st.tuples(st.sampled_from(NAMES), st.sampled_from(TYPES), st.booleans()),
    max_size=len(NAMES),
    unique_by=lambda t: t[0],
)


def _schema(request: list[tuple[str, GType, bool]], box: list[tuple[str, GType, bool]]) -> Schema:
    """``PutRequest`` has the request fields; ``PutResponse`` wraps a nested ``Thing`` too."""
    thing = GType.object("Thing", [Field(n, t, required=r) for n, t, r in request])
    wrapper = GType.object(
        "Box",
        [
            Field("thing", GType.ref("Thing")),
            *(Field(f"box_{n}", t, required=r) for n, t, r in box),
        ],
    )
    return Schema("demo", (thing, wrapper), (Method("Put", GType.ref("Thing"), GType.ref("Box")),))


histories = st.lists(st.tuples(field_sets, field_sets), min_size=2, max_size=6)


def _build_all(schemas: list[Schema], lock: FieldLock) -> list[descriptor_pb2.FileDescriptorProto]:
    built: list[descriptor_pb2.FileDescriptorProto] = []
    for schema in schemas:
        built.append(build_file(schema, lock, previous=built))
    return built


def _reserved_numbers(msg: descriptor_pb2.DescriptorProto) -> set[int]:
    return {n for r in msg.reserved_range for n in range(r.start, r.end)}


@given(histories)
@settings(max_examples=100, deadline=None)
def test_field_numbers_are_stable_reserved_when_removed_and_never_reused(
    history: list[tuple[list[tuple[str, GType, bool]], list[tuple[str, GType, bool]]]],
) -> None:
    schemas = [_schema(request, box) for request, box in history]
    lock = FieldLock()
    built = _build_all(schemas, lock)

    first_number: dict[tuple[str, str], int] = {}
    ever: dict[str, dict[str, int]] = {}
    for fdp in built:
        for msg in fdp.message_type:
            present = {f.name: f.number for f in msg.field}
            seen_before = ever.setdefault(msg.name, {})
            for name, number in present.items():
                # Stable: a field keeps the number it first got, in every later version.
                assert first_number.setdefault((msg.name, name), number) == number
                if name not in seen_before:
                    # New fields take a number above every number the message ever used.
                    assert all(number > used for used in seen_before.values())
            # Never reused: distinct fields of one message never share a number.
            numbers = {**seen_before, **present}
            assert len(set(numbers.values())) == len(numbers)
            # Removed: reserved by number and by name, and nothing present sits on a reservation.
            gone = {n: num for n, num in seen_before.items() if n not in present}
            assert set(msg.reserved_name) == set(gone)
            assert _reserved_numbers(msg) == set(gone.values())
            assert not _reserved_numbers(msg) & set(present.values())
            seen_before.update(present)

    # Regenerating from the committed lock gives the same descriptors and assigns nothing new.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "fields.lock.json")
        path.write_text(lock.dumps(), encoding="utf-8")
        reloaded = FieldLock.load(path)
    assert _build_all(schemas, reloaded) == built
    assert not reloaded.changed


COLORS = ("red", "green", "blue", "cyan", "magenta")


def _enum_schema(values: list[str]) -> Schema:
    color = GType.enum("Color", values)
    paint = GType.object("Paint", [Field("color", GType.ref("Color"))])
    return Schema("demo", (color, paint), (Method("Put", GType.ref("Paint"), GType.ref("Paint")),))


@given(st.lists(st.lists(st.sampled_from(COLORS), min_size=1, unique=True), min_size=2, max_size=6))
@settings(max_examples=100, deadline=None)
def test_enum_values_are_reserved_by_number_and_name_once_removed(history: list[list[str]]) -> None:
    """A removed enum value's number and name are reserved in every later version (SPEC §4)."""
    lock = FieldLock()
    built = _build_all([_enum_schema(values) for values in history], lock)

    ever: dict[str, int] = {}
    for fdp in built:
        (enum,) = fdp.enum_type
        present = {v.name: v.number for v in enum.value if v.number != 0}
        for name, number in present.items():
            assert ever.setdefault(name, number) == number
        gone = {n: num for n, num in ever.items() if n not in present}
        assert set(enum.reserved_name) == set(gone)
        reserved = {n for r in enum.reserved_range for n in range(r.start, r.end + 1)}
        assert reserved == set(gone.values())
        assert not reserved & set(present.values())
