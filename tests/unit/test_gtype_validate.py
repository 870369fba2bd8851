"""validate(): what each kind accepts, the paths and texts of violations, formats and customs."""

from __future__ import annotations

import enum
from datetime import date, datetime

import pytest

from runtime.gtype import (
    Constraints,
    Field,
    FieldViolation,
    GType,
    Schema,
    register_custom_validator,
    validate,
)
from runtime.gtype._checks import check_format
from runtime.gtype._validate import MISSING, REQUIRED

STR, INT, FLOAT = GType.primitive("str"), GType.primitive("int"), GType.primitive("float")

ITEM = GType.object(
    "Item",
    [
        Field("sku", GType.primitive("str", constraints=Constraints(min_length=1))),
        Field("qty", GType.primitive("int", constraints=Constraints(ge=1))),
    ],
)
ORDER = GType.object(
    "Order",
    [
        Field("items", GType.array(GType.ref("Item"))),
        Field("tags", GType.map(STR, INT), required=False),
        Field("kind", GType.ref("Kind")),
        Field("note", GType.primitive("str", nullable=True), required=False),
    ],
)
SCHEMA = Schema(module="shop", types=(ITEM, ORDER, GType.enum("Kind", ["retail", "bulk"])))


class Kind(enum.Enum):
    RETAIL = "retail"


def check(value: object, node: GType = GType.ref("Order")) -> list[tuple[str, str, object]]:
    return [(v.path, v.expected, v.actual) for v in validate(value, node, SCHEMA)]


def test_a_valid_value_has_no_violations() -> None:
    value = {"items": [{"sku": "A", "qty": 1}], "tags": {"red": 2}, "kind": "bulk", "note": None}
    assert validate(value, GType.ref("Order"), SCHEMA) == []


def test_every_violation_is_reported_at_once_with_path_expected_and_actual() -> None:
    value = {
        "items": [{"sku": "A", "qty": 1}, {"sku": "", "qty": 0}, {"qty": "3"}],
        "tags": {"red": "x"},
        "kind": "wholesale",
        "extra": True,
    }

    assert check(value) == [
        ("items[1].sku", "string of at least 1 characters", ""),
        ("items[1].qty", "integer >= 1", 0),
        ("items[2].sku", REQUIRED, MISSING),
        ("items[2].qty", "integer", "3"),
        ('tags["red"]', "integer", "x"),
        ("kind", "one of ['retail', 'bulk']", "wholesale"),
        ("extra", "no field named 'extra'", True),
    ]


def test_missing_required_field_says_required_and_missing() -> None:
    assert check({"items": []}) == [("kind", "a value (field is required)", "<missing>")]


def test_a_path_prefix_is_kept_in_every_violation() -> None:
    violations = validate({"sku": 5, "qty": 1}, GType.ref("Item"), SCHEMA, path="req.items[0]")
    assert violations == [FieldViolation("req.items[0].sku", "string", 5)]


def test_a_root_value_of_the_wrong_kind_is_one_violation_at_the_root() -> None:
    assert check([1, 2]) == [("", "object (Order)", [1, 2])]


@pytest.mark.parametrize(
    ("node", "good", "bad", "expected"),
    [
        (STR, "x", 1, "string"),
        (INT, 3, True, "integer"),
        (INT, -7, 1.0, "integer"),
        (FLOAT, 2, "2.0", "number"),
        (FLOAT, 2.5, False, "number"),
        (GType.primitive("bool"), False, 0, "boolean"),
        (GType.primitive("bytes"), b"\x00", [0], "bytes"),
        (GType.primitive("bytes"), "text form", 1, "bytes"),
        (GType.primitive("datetime"), datetime(2025, 1, 2, 3, 4), "2025-13-01", "datetime (ISO 8601)"),
        (GType.primitive("datetime"), "2025-01-02T03:04:05Z", 1700000000, "datetime (ISO 8601)"),
        (GType.primitive("date"), date(2025, 1, 2), datetime(2025, 1, 2), "date (ISO 8601, YYYY-MM-DD)"),
        (GType.primitive("date"), "2025-01-02", "02/01/2025", "date (ISO 8601, YYYY-MM-DD)"),
        (GType.literal(1, 2), 2, True, "one of [1, 2]"),
        (GType.literal(True), True, 1, "one of [True]"),
        (GType.ref("Kind"), Kind.RETAIL, "RETAIL", "one of ['retail', 'bulk']"),
        (GType.array(INT), (1, 2), {"a": 1}, "array"),
        (GType.map(INT, STR), {"5": "a", 6: "b"}, ["a"], "map with integer keys"),
        (GType.union(INT, STR), "x", 1.5, "integer or string"),
        (GType.primitive("int", nullable=True), None, "1", "integer or null"),
        (GType.ref("Item", nullable=True), None, 3, "object (Item) or null"),
    ],
)  # fmt: skip
def test_each_kind_accepts_its_values_and_names_what_it_expected(
    node: GType, good: object, bad: object, expected: str
) -> None:
    assert validate(good, node, SCHEMA) == []
    assert validate(bad, node, SCHEMA) == [FieldViolation("", expected, bad)]


def test_none_is_refused_where_the_node_is_not_nullable() -> None:
    assert validate(None, STR) == [FieldViolation("", "string", None)]


@pytest.mark.parametrize(
    ("constraints", "node_name", "bad", "expected"),
    [
        (Constraints(min_length=2), "str", "a", "string of at least 2 characters"),
        (Constraints(max_length=2), "str", "abc", "string of at most 2 characters"),
        (Constraints(max_length=2), "bytes", "é€", "bytes of at most 2 bytes"),
        (Constraints(gt=0), "int", 0, "integer > 0"),
        (Constraints(ge=0.5), "float", 0.4, "number >= 0.5"),
        (Constraints(lt=10), "int", 10, "integer < 10"),
        (Constraints(le=1), "float", 1.01, "number <= 1"),
        (Constraints(pattern=r"^[a-z]+$"), "str", "abc1", "string matching /^[a-z]+$/"),
        (Constraints(format="email"), "str", "not-an-email", "email address"),
        (Constraints(format="uuid"), "str", "1234", "UUID"),
        (Constraints(format="url"), "str", "example.org", "URL (an absolute URI)"),
        (Constraints(enum=("a", "b")), "str", "c", "one of ['a', 'b']"),
    ],
)  # fmt: skip
def test_constraint_violations_say_what_was_expected(
    constraints: Constraints, node_name: str, bad: object, expected: str
) -> None:
    node = GType.primitive(node_name, constraints=constraints)
    assert validate(bad, node) == [FieldViolation("", expected, bad)]


def test_several_constraints_of_one_value_are_all_reported_in_order() -> None:
    node = GType.primitive("str", constraints=Constraints(max_length=3, pattern="^[0-9]+$"))
    assert [v.expected for v in validate("abcd", node)] == [
        "string of at most 3 characters",
        "string matching /^[0-9]+$/",
    ]


def test_array_and_map_lengths_are_checked() -> None:
    array = GType.array(INT, constraints=Constraints(min_length=1))
    mapping = GType.map(STR, INT, constraints=Constraints(max_length=1))

    assert validate([], array) == [FieldViolation("", "array of at least 1 items", [])]
    assert validate({"a": 1, "b": 2}, mapping) == [
        FieldViolation("", "map of at most 1 entries", {"a": 1, "b": 2})
    ]


def test_map_keys_of_the_wrong_type_are_violations_at_the_key() -> None:
    assert validate({1: "a", "x": "b"}, GType.map(STR, STR)) == [
        FieldViolation("[1]", "string key", 1)
    ]
    assert validate({"x": "a"}, GType.map(INT, STR), path="scores") == [
        FieldViolation('scores["x"]', "integer key", "x")
    ]


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("email", ["ada@example.org", "a.b+c@sub.example.co", "a@b"], ["ada", "@x.org", "a@@x.org", "a b@x.org", "a@x.org."]),
        ("uuid", ["12345678-1234-5678-1234-567812345678", "ABCDEF01-1234-5678-1234-567812345678"], ["", "xyz", "1234", "12345678123456781234567812345678"]),
        ("url", ["https://example.org", "http://h/path?q=1", "postgres://u:p@db:5432/x", "mailto:a@b"], ["example.org", "://x", "ht tp://x", "/relative/path"]),
    ],
)  # fmt: skip
def test_formats_follow_their_documented_checks(fmt: str, good: list[str], bad: list[str]) -> None:
    """protovalidate's definitions: the HTML standard's email, hyphenated UUIDs, RFC 3986 URIs."""
    assert all(check_format(fmt, v) for v in good)
    assert not any(check_format(fmt, v) for v in bad)


def test_an_unresolvable_ref_is_a_programmer_error_naming_the_type() -> None:
    with pytest.raises(KeyError, match="cannot resolve ref 'Nope'"):
        validate({}, GType.ref("Nope"), SCHEMA)
    with pytest.raises(KeyError, match="no schema"):
        validate({}, GType.ref("Item"))


def test_bad_data_never_raises() -> None:
    for value in (None, object(), float("nan"), {1: 2}, [[[]]], b"\xff", {"items": {"a": 1}}):
        assert isinstance(validate(value, GType.ref("Order"), SCHEMA), list)


# -- custom validators --------------------------------------------------------------------------


def even(value: object) -> bool:
    return isinstance(value, int) and value % 2 == 0


def not_admin(value: object) -> None:
    if value == "admin":
        raise ValueError("reserved name")


register_custom_validator("tests.unit:even", even)
register_custom_validator("tests.unit:not_admin", not_admin)


def test_custom_validators_fail_by_returning_false_or_raising() -> None:
    number = GType.primitive("int", constraints=Constraints(custom=("tests.unit:even",)))
    name = GType.primitive("str", constraints=Constraints(custom=("tests.unit:not_admin",)))

    assert validate(4, number) == []
    assert validate(3, number) == [FieldViolation("", "a value accepted by tests.unit:even", 3)]
    assert validate("ada", name) == []
    assert validate("admin", name) == [
        FieldViolation("", "a value accepted by tests.unit:not_admin (reserved name)", "admin")
    ]


def test_unregistered_custom_validators_are_skipped() -> None:
    node = GType.primitive("int", constraints=Constraints(custom=("nowhere:registered",)))
    assert validate(3, node) == []


def test_custom_validators_run_only_when_everything_else_passed() -> None:
    node = GType.primitive("int", constraints=Constraints(ge=10, custom=("tests.unit:even",)))
    assert validate(3, node) == [FieldViolation("", "integer >= 10", 3)]
    assert validate(11, node) == [FieldViolation("", "a value accepted by tests.unit:even", 11)]


def test_custom_validators_on_a_ref_run_after_the_named_type_passed() -> None:
    register_custom_validator("tests.unit:small_order", lambda v: len(v) <= 1)  # type: ignore[arg-type]
    node = GType.ref("Item", constraints=Constraints(custom=("tests.unit:small_order",)))
    big = {"sku": "A", "qty": 1}

    assert validate(big, node, SCHEMA) == [
        FieldViolation("", "a value accepted by tests.unit:small_order", big)
    ]
    assert [v.path for v in validate({"sku": "", "qty": 1}, node, SCHEMA)] == ["sku"]
