"""The field lock and the descriptor builder: numbers, reservations, and schemas with no wire form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import runtime.wire
from runtime.codegen._proto import render_proto
from runtime.gtype import Field, GType, Method, Schema
from runtime.versions import VersionHistory, build_version_files
from runtime.wire import FieldLock, WireSchemaError, build_file
from runtime.wire._descriptor import message_fields

REPO = Path(__file__).resolve().parents[2]
S = GType.primitive


def _schema(*fields: Field, types: tuple[GType, ...] = ()) -> Schema:
    note = GType.object("Note", list(fields))
    return Schema("demo", (note, *types), (Method("Put", GType.ref("Note"), GType.ref("Note")),))


def _isort_style(names: list[str]) -> list[str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical."""
    return sorted(names, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))


def test_public_names_are_exported_sorted() -> None:
    assert runtime.wire.__all__ == _isort_style(runtime.wire.__all__)
    assert {"FieldLock", "WireSchemaError", "WireVersion", "build_file", "serving_pool"} <= set(
        runtime.wire.__all__
    )


def test_lock_numbers_fields_in_first_use_order_and_remembers_them() -> None:
    lock = FieldLock()
    assert [lock.field_number("M", n) for n in ("a", "b", "c")] == [1, 2, 3]
    assert lock.changed
    assert lock.field_number("M", "b") == 2
    assert lock.field_number("Other", "z") == 1
    assert lock.enum_number("E", "E_X") == 1  # 0 is the _UNSPECIFIED value


def test_lock_survives_a_dump_and_load(tmp_path: Path) -> None:
    lock = FieldLock()
    for name in ("zeta", "alpha", "mid"):
        lock.field_number("M", name)
    lock.enum_number("Color", "COLOR_RED")
    path = tmp_path / "fields.lock.json"
    path.write_text(lock.dumps(), encoding="utf-8")
    loaded = FieldLock.load(path)
    assert loaded == lock
    assert not loaded.changed
    # Entries are written in number order, so a diff of the lock reads like the .proto.
    assert list(json.loads(path.read_text())["messages"]["M"]) == ["zeta", "alpha", "mid"]


def test_missing_lock_file_is_an_empty_lock(tmp_path: Path) -> None:
    assert FieldLock.load(tmp_path / "absent.json") == FieldLock()


def test_lock_skips_the_numbers_protobuf_reserves_for_itself() -> None:
    lock = FieldLock(messages={"M": {"last": 18999}})
    assert lock.field_number("M", "next") == 20000


def test_hand_edited_lock_with_a_clash_is_refused_naming_both_fields(tmp_path: Path) -> None:
    path = tmp_path / "fields.lock.json"
    path.write_text(
        json.dumps({"messages": {"CreateUserRequest": {"name": 1, "email": 2, "nickname": 2}}})
    )
    with pytest.raises(ValueError) as caught:
        FieldLock.load(path)
    message = str(caught.value)
    assert "'email'" in message and "'nickname'" in message
    assert "CreateUserRequest" in message and "2" in message and str(path) in message


def test_hand_edited_enum_clash_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "fields.lock.json"
    path.write_text(json.dumps({"enums": {"Color": {"COLOR_RED": 1, "COLOR_BLUE": 1}}}))
    with pytest.raises(ValueError, match=r"enum Color: 'COLOR_RED' and 'COLOR_BLUE' both use 1"):
        FieldLock.load(path)


def test_lock_that_is_not_json_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fields.lock.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON") as caught:
        FieldLock.load(path)
    assert str(path) in str(caught.value)


def test_removed_field_is_reserved_by_number_and_name_and_its_number_stays_taken() -> None:
    lock = FieldLock()
    v1 = build_file(_schema(Field("name", S("str")), Field("email", S("str"))), lock)
    v2 = build_file(
        _schema(Field("email", S("str")), Field("given_name", S("str"))), lock, previous=[v1]
    )
    put = next(m for m in v2.message_type if m.name == "PutRequest")
    assert [(f.name, f.number) for f in put.field] == [("email", 2), ("given_name", 3)]
    assert [(r.start, r.end) for r in put.reserved_range] == [(1, 2)]
    assert list(put.reserved_name) == ["name"]
    text = render_proto(v2, header="DO NOT EDIT: test")
    assert '  reserved 1;\n  reserved "name";' in text
    # Still reserved two versions on, even though the version in between no longer had it.
    v3 = build_file(
        _schema(Field("email", S("str")), Field("age", S("int"))), lock, previous=[v1, v2]
    )
    put3 = next(m for m in v3.message_type if m.name == "PutRequest")
    assert set(put3.reserved_name) == {"name", "given_name"}
    assert {r.start for r in put3.reserved_range} == {1, 3}
    assert message_fields(v3)["PutRequest"] == {"email": 2, "age": 4}


def test_a_field_that_comes_back_gets_its_old_number_back() -> None:
    lock = FieldLock()
    v1 = build_file(_schema(Field("a", S("str")), Field("b", S("str"))), lock)
    v2 = build_file(_schema(Field("b", S("str"))), lock, previous=[v1])
    v3 = build_file(_schema(Field("b", S("str")), Field("a", S("str"))), lock, previous=[v1, v2])
    put = next(m for m in v3.message_type if m.name == "PutRequest")
    assert message_fields(v3)["PutRequest"] == {"b": 2, "a": 1}
    assert not put.reserved_range and not put.reserved_name


def test_the_committed_users_versions_reserve_name_after_the_split() -> None:
    directory = REPO / "modules" / "users"
    history = VersionHistory.load("users", directory / "versions")
    built = dict(
        (r.id, fdp)
        for r, fdp in build_version_files(history, FieldLock.load(directory / "fields.lock.json"))
    )
    old = message_fields(built["2025-01-15"])["CreateUserRequest"]
    new = next(m for m in built["2025-06-01"].message_type if m.name == "CreateUserRequest")
    assert "name" in old and "name" not in {f.name for f in new.field}
    assert list(new.reserved_name) == ["name"]
    assert [r.start for r in new.reserved_range] == [old["name"]]


def test_a_list_of_lists_has_no_wire_form_and_the_error_names_the_field() -> None:
    schema = _schema(Field("grid", GType.array(GType.array(S("int")))))
    with pytest.raises(WireSchemaError, match=r"PutRequest\.grid\[\]"):
        build_file(schema, FieldLock())


def test_a_map_with_bool_keys_is_refused() -> None:
    with pytest.raises(WireSchemaError, match="map keys must be str or int"):
        build_file(_schema(Field("flags", GType.map(S("bool"), S("str")))), FieldLock())


def test_an_enum_value_spelt_unspecified_collides_with_the_zero_value() -> None:
    gender = GType.enum("Gender", ["female", "male", "unspecified"])
    schema = _schema(Field("gender", GType.ref("Gender")), types=(gender,))
    with pytest.raises(WireSchemaError, match="GENDER_UNSPECIFIED"):
        build_file(schema, FieldLock())


def test_enum_values_that_normalise_alike_are_refused() -> None:
    mood = GType.enum("Mood", ["so-so", "so so"])
    with pytest.raises(WireSchemaError, match="MOOD_SO_SO"):
        build_file(_schema(Field("mood", GType.ref("Mood")), types=(mood,)), FieldLock())


def test_a_type_named_like_a_generated_request_message_is_refused() -> None:
    clash = GType.object("PutRequest", [Field("x", S("str"))])
    with pytest.raises(WireSchemaError, match="PutRequest"):
        build_file(_schema(Field("inner", GType.ref("PutRequest")), types=(clash,)), FieldLock())


def test_requests_must_be_objects() -> None:
    schema = Schema("demo", (), (Method("Put", S("str"), S("str")),))
    with pytest.raises(WireSchemaError, match="must be objects"):
        build_file(schema, FieldLock())


def test_scalars_have_explicit_presence_and_datetimes_are_timestamps() -> None:
    fdp = build_file(
        _schema(
            Field("n", S("int")), Field("at", S("datetime")), Field("tags", GType.array(S("str")))
        ),
        FieldLock(),
    )
    put = next(m for m in fdp.message_type if m.name == "PutRequest")
    by_name = {f.name: f for f in put.field}
    assert by_name["n"].proto3_optional
    assert (
        by_name["at"].type_name == ".google.protobuf.Timestamp"
        and not by_name["at"].proto3_optional
    )
    assert not by_name["tags"].proto3_optional
    assert list(fdp.dependency) == ["buf/validate/validate.proto", "google/protobuf/timestamp.proto"]
