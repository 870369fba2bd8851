"""The wire codec: dicts to protobuf bytes and back, one private descriptor pool per version."""

from __future__ import annotations

import datetime as dt
import enum
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from runtime.errors import InvalidArgument, status_of
from runtime.gtype import Field, GType, Method, Schema
from runtime.versions import VersionCatalog
from runtime.wire import FieldLock, WireVersion, build_file, serving_pool

REPO = Path(__file__).resolve().parents[2]
S = GType.primitive

ADDRESS = GType.object("Address", [Field("street", S("str")), Field("city", S("str"))])
COORDS = GType.object("Coords", [Field("lat", S("float")), Field("lon", S("float"))])
COLOR = GType.enum("Color", ["red", "dark green"])
NOTE = GType.object(
    "Note",
    [
        Field("text", S("str")),
        Field("count", S("int"), required=False),
        Field("where", GType.union(GType.ref("Address"), GType.ref("Coords")), required=False),
        Field("amount", GType.union(S("float"), S("int")), required=False),
        Field("when", GType.union(S("datetime"), S("date"), S("str")), required=False),
        Field("at", S("datetime"), required=False),
        Field("color", GType.ref("Color"), required=False),
        Field("tags", GType.map(S("str"), GType.ref("Address")), required=False),
    ],
)
SCHEMA = Schema(
    "demo", (ADDRESS, COORDS, COLOR, NOTE), (Method("Put", GType.ref("Note"), GType.ref("Note")),)
)


@pytest.fixture(scope="module")
def wire() -> WireVersion:
    return WireVersion(SCHEMA, build_file(SCHEMA, FieldLock()))


def _round_trip(wire: WireVersion, value: dict[str, object]) -> dict[str, object]:
    return wire.decode("PutRequest", wire.encode("PutRequest", value))


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xff", id="bad-tag"),
        pytest.param(b"\x00", id="field-number-zero"),
        pytest.param(b"\x08\x80", id="truncated-varint"),
        pytest.param(b"\x0a\x05ab", id="length-past-the-end"),
        pytest.param(b"\x0a\x02\xc3\x28", id="string-not-utf8"),
        pytest.param(b"\x08" + b"\xff" * 11, id="varint-too-long"),
    ],
)
def test_malformed_bytes_are_invalid_argument_naming_the_message(
    wire: WireVersion, payload: bytes
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        wire.decode("PutRequest", payload)
    assert "demo.v1.PutRequest" in caught.value.message
    assert status_of(caught.value) == grpc.StatusCode.INVALID_ARGUMENT


def test_union_of_objects_keeps_the_variant_the_value_is(wire: WireVersion) -> None:
    coords = {"lat": 51.5, "lon": -0.1}
    assert _round_trip(wire, {"text": "x", "where": coords})["where"] == coords
    address = {"street": "Main St", "city": "Springfield"}
    assert _round_trip(wire, {"text": "x", "where": address})["where"] == address


def test_union_of_numbers_keeps_ints_as_ints(wire: WireVersion) -> None:
    out = _round_trip(wire, {"text": "x", "amount": 3})
    assert out["amount"] == 3 and type(out["amount"]) is int
    out = _round_trip(wire, {"text": "x", "amount": 2.5})
    assert out["amount"] == 2.5 and type(out["amount"]) is float


def test_union_with_str_keeps_plain_strings_and_dates(wire: WireVersion) -> None:
    assert _round_trip(wire, {"text": "x", "when": "next week"})["when"] == "next week"
    assert _round_trip(wire, {"text": "x", "when": "2025-06-01"})["when"] == "2025-06-01"
    at = dt.datetime(2025, 6, 1, 12, 30, tzinfo=dt.UTC)
    assert _round_trip(wire, {"text": "x", "when": at})["when"] == at


def test_a_union_value_travels_in_a_member_whose_published_rules_it_meets() -> None:
    """``"d"`` is a string too short for ``str`` (min 2) but a member of ``Letter``: it goes in
    the enum member, so protovalidate, judging the member's own rules, accepts what ``validate``
    accepts (Property 13's counterexample, ``a0: str | float | Enum0``)."""
    import protovalidate

    from runtime.gtype import Constraints

    short = GType.primitive("str", constraints=Constraints(min_length=2))
    small = GType.primitive("int", constraints=Constraints(lt=5))
    schema = Schema(
        "demo",
        (
            GType.enum("Letter", ["d"]),
            GType.object("Box", [
                Field("v", GType.union(short, GType.primitive("float"), GType.ref("Letter"))),
                Field("n", GType.union(small, GType.primitive("float")), required=False),
            ]),
        ),
        (Method("Put", GType.ref("Box"), GType.ref("Box")),),
    )  # fmt: skip
    wire = WireVersion(schema, build_file(schema, FieldLock()))
    cases = [
        ({"v": "d"}, "v_letter"),  # the enum, not a too-short string
        ({"v": "dd"}, "v_str"),  # a valid string stays a string
        ({"v": "d", "n": 7}, "n_float"),  # 7 breaks int's lt 5 but is a fine float
        ({"v": "d", "n": 3}, "n_int"),  # and 3 is an int before it is a float
    ]
    for value, member in cases:
        message = wire.from_dict("PutRequest", value)
        assert message.WhichOneof(member.split("_")[0]) == member, value
        assert not protovalidate.Validator().collect_violations(message), value
    # A value no variant accepts still goes in a member, and both refuse it.
    message = wire.from_dict("PutRequest", {"v": "e"})
    assert message.WhichOneof("v") == "v_str"
    assert protovalidate.Validator().collect_violations(message)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            dt.datetime(2025, 1, 15, 10, 0, 0, 250000, tzinfo=dt.UTC),
            dt.datetime(2025, 1, 15, 10, 0, 0, 250000, tzinfo=dt.UTC),
        ),
        (dt.datetime(2025, 1, 15, 10, 0), dt.datetime(2025, 1, 15, 10, 0, tzinfo=dt.UTC)),
        ("2025-01-15T10:00:00Z", dt.datetime(2025, 1, 15, 10, 0, tzinfo=dt.UTC)),
        ("2025-01-15T12:00:00+02:00", dt.datetime(2025, 1, 15, 10, 0, tzinfo=dt.UTC)),
        ("2025-01-15T10:00:00", dt.datetime(2025, 1, 15, 10, 0, tzinfo=dt.UTC)),
        ("2025-01-15", dt.datetime(2025, 1, 15, tzinfo=dt.UTC)),
    ],
)
def test_datetimes_encode_from_objects_and_iso_strings_and_decode_as_utc(
    wire: WireVersion, given: object, expected: dt.datetime
) -> None:
    assert _round_trip(wire, {"text": "x", "at": given})["at"] == expected


def test_enums_travel_as_protobuf_enums_and_come_back_as_their_values(wire: WireVersion) -> None:
    class Color(enum.Enum):
        DARK_GREEN = "dark green"

    data = wire.encode("PutRequest", {"text": "x", "color": Color.DARK_GREEN})
    msg = wire.request_class("Put").FromString(data)
    assert msg.color == 2  # type: ignore[attr-defined]  # COLOR_DARK_GREEN, by the lock
    assert wire.decode("PutRequest", data)["color"] == "dark green"


def test_absent_optional_fields_stay_absent_and_zero_values_stay_present(wire: WireVersion) -> None:
    assert _round_trip(wire, {"text": ""}) == {"text": "", "tags": {}}
    assert _round_trip(wire, {"text": "x", "count": 0})["count"] == 0


def test_a_value_of_the_wrong_type_is_a_type_error_naming_the_field(wire: WireVersion) -> None:
    with pytest.raises(TypeError, match=r"demo\.v1\.PutRequest\.count"):
        wire.encode("PutRequest", {"text": "x", "count": "three"})
    with pytest.raises(TypeError, match="matches no variant"):
        wire.encode("PutRequest", {"text": "x", "amount": "three"})


def test_each_version_has_its_own_pool_so_both_shapes_live_side_by_side() -> None:
    catalog = VersionCatalog.from_module_dir("users", REPO / "modules" / "users", {})
    old, new = catalog.wire("2025-01-15"), catalog.wire("2025-06-01")
    assert old.request_class("CreateUser") is not new.request_class("CreateUser")
    payload = old.encode("CreateUserRequest", {"name": "Ada Lovelace", "email": "ada@example.com"})
    assert old.decode("CreateUserRequest", payload) == {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
    }
    # Field 1 ("name") is reserved in the new shape: its bytes are not read as anything.
    assert new.decode("CreateUserRequest", payload) == {"email": "ada@example.com"}


def test_serving_pool_resolves_the_module_service_and_health_and_reflection() -> None:
    fdp = build_file(SCHEMA, FieldLock())
    pool = serving_pool([fdp, fdp])
    service = pool.FindServiceByName("demo.v1.DemoService")
    assert [m.name for m in service.methods] == ["Put"]
    assert (
        pool.FindServiceByName("grpc.health.v1.Health").full_name
        == health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    )
    assert pool.FindServiceByName("grpc.reflection.v1alpha.ServerReflection") is not None
