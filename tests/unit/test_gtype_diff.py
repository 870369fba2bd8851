"""The diff engine, row by row of SPEC §4's table, in request, response and shared positions."""

from __future__ import annotations

import pytest

from runtime.gtype import Change, Constraints, Diff, Field, GType, Method, Schema, diff

STR, INT = GType.primitive("str"), GType.primitive("int")


def schema(req: list[Field], resp: list[Field], shared: list[Field] | None = None) -> Schema:
    """A one-method schema; ``Shared`` (when given) is used by both request and response."""
    types = [GType.object("Req", req), GType.object("Resp", resp)]
    if shared is not None:
        types.append(GType.object("Shared", shared))
    return Schema(
        module="m",
        types=tuple(types),
        methods=(Method("Call", GType.ref("Req"), GType.ref("Resp")),),
    )


def shared_schema(fields: list[Field]) -> Schema:
    link = Field("shared", GType.ref("Shared"))
    return schema([link], [link], fields)


def changes(old: Schema, new: Schema) -> list[tuple[str, str, bool]]:
    return [(c.path, c.kind, c.breaking) for c in diff(old, new).changes]


BASE = [Field("a", STR)]


@pytest.mark.parametrize(
    ("old_fields", "new_fields", "kind", "in_request", "in_response"),
    [
        (BASE, [*BASE, Field("b", INT)], "field_added", True, False),
        (BASE, [*BASE, Field("b", INT, required=False)], "field_added", False, False),
        ([*BASE, Field("b", INT, required=False)], BASE, "field_removed", True, True),
        ([*BASE, Field("b", INT)], BASE, "field_removed", True, True),
        ([*BASE, Field("b", INT, required=False)], [*BASE, Field("b", INT)], "became_required", True, False),
        ([*BASE, Field("b", INT)], [*BASE, Field("b", INT, required=False)], "became_optional", False, True),
        ([*BASE, Field("b", INT.with_nullable())], [*BASE, Field("b", INT)], "nullable_removed", True, False),
        ([*BASE, Field("b", INT)], [*BASE, Field("b", INT.with_nullable())], "nullable_added", False, True),
        ([*BASE, Field("b", INT)], [*BASE, Field("b", STR)], "type_changed", True, True),
        (
            [*BASE, Field("b", GType.primitive("str", constraints=Constraints(max_length=9)))],
            [*BASE, Field("b", GType.primitive("str", constraints=Constraints(max_length=5)))],
            "constraint_changed", True, False,
        ),
        (
            [*BASE, Field("b", GType.primitive("int", constraints=Constraints(ge=5)))],
            [*BASE, Field("b", GType.primitive("int", constraints=Constraints(ge=1)))],
            "constraint_changed", False, True,
        ),
    ],
)  # fmt: skip
def test_each_row_of_the_table_in_request_response_and_both(
    old_fields: list[Field], new_fields: list[Field], kind: str, in_request: bool, in_response: bool
) -> None:
    as_request = changes(schema(old_fields, BASE), schema(new_fields, BASE))
    as_response = changes(schema(BASE, old_fields), schema(BASE, new_fields))
    as_both = changes(shared_schema(old_fields), shared_schema(new_fields))

    assert as_request == [("Req.b", kind, in_request)]
    assert as_response == [("Resp.b", kind, in_response)]
    assert as_both == [("Shared.b", kind, in_request or in_response)]


def test_methods_added_are_safe_and_methods_removed_break() -> None:
    old = schema(BASE, BASE)
    extra = Method("Other", GType.ref("Req"), GType.ref("Resp"))
    new = Schema(module="m", types=old.types, methods=(*old.methods, extra))

    assert changes(old, new) == [("Other", "method_added", False)]
    assert changes(new, old) == [("Other", "method_removed", True)]


def test_a_rename_is_a_removal_plus_an_addition_and_breaks_both_ways() -> None:
    old_fields, new_fields = [*BASE, Field("note", STR, required=False)], [*BASE, Field("memo", STR, required=False)]

    as_request = changes(schema(old_fields, BASE), schema(new_fields, BASE))
    as_response = changes(schema(BASE, old_fields), schema(BASE, new_fields))

    assert as_request == [("Req.memo", "field_added", False), ("Req.note", "field_removed", True)]
    assert as_response == [("Resp.memo", "field_added", False), ("Resp.note", "field_removed", True)]


def test_enum_values_removed_break_requests_and_added_break_responses() -> None:
    def with_enum(values: list[str], position: str) -> Schema:
        link = [Field("color", GType.ref("Color"))]
        s = schema(
            link if position == "request" else BASE, link if position == "response" else BASE
        )
        return Schema(module="m", types=(*s.types, GType.enum("Color", values)), methods=s.methods)

    assert changes(with_enum(["red"], "request"), with_enum(["red", "blue"], "request")) == [
        ("Color", "enum_value_added", False)
    ]
    assert changes(with_enum(["red"], "response"), with_enum(["red", "blue"], "response")) == [
        ("Color", "enum_value_added", True)
    ]
    assert changes(with_enum(["red", "blue"], "request"), with_enum(["red"], "request")) == [
        ("Color", "enum_value_removed", True)
    ]
    assert changes(with_enum(["red", "blue"], "response"), with_enum(["red"], "response")) == [
        ("Color", "enum_value_removed", False)
    ]


@pytest.mark.parametrize(
    ("old", "new", "detail"),
    [
        (GType.array(INT), GType.array(STR), "Req.b[]"),
        (GType.map(STR, INT), GType.map(INT, INT), "Req.b{key}"),
        (GType.map(STR, INT), GType.map(STR, STR), "Req.b{}"),
        (GType.union(INT, STR), GType.union(STR, INT), "Req.b<0>"),
        (GType.literal("a", "b"), GType.literal("a"), "Req.b"),
        (GType.ref("X"), GType.ref("Y"), "Req.b"),
        (INT, GType.array(INT), "Req.b"),
    ],
)
def test_any_type_change_is_breaking_at_the_innermost_path(
    old: GType, new: GType, detail: str
) -> None:
    found = changes(schema([Field("b", old)], BASE), schema([Field("b", new)], BASE))
    assert found[0] == (detail, "type_changed", True)
    assert all(breaking for _, _, breaking in found)


def test_reusing_an_enum_number_is_breaking() -> None:
    old = schema([Field("a", STR)], BASE)
    result = diff(
        old, old, old_numbers={"Color": {"COLOR_RED": 1}}, new_numbers={"Color": {"COLOR_BLUE": 1}}
    )
    assert [(c.path, c.kind, c.breaking) for c in result.changes] == [
        ("Color.COLOR_BLUE", "field_number_reused", True)
    ]


def test_reusing_a_field_number_is_breaking() -> None:
    old = schema([Field("a", STR), Field("b", INT, required=False)], BASE)
    new = schema([Field("a", STR), Field("c", INT, required=False)], BASE)

    result = diff(
        old, new, old_numbers={"Req": {"a": 1, "b": 2}}, new_numbers={"Req": {"a": 1, "c": 2}}
    )

    assert result.breaking
    assert Change("Req.c", "field_number_reused", True, "field number 2 belonged to 'b'") in (
        result.changes
    )
    kept = diff(
        old, new, old_numbers={"Req": {"a": 1, "b": 2}}, new_numbers={"Req": {"a": 1, "c": 3}}
    )
    assert "field_number_reused" not in {c.kind for c in kept.changes}


def test_constraints_tightened_break_requests_and_loosened_break_responses() -> None:
    def bounded(max_length: int | None) -> list[Field]:
        return [Field("a", GType.primitive("str", constraints=Constraints(max_length=max_length)))]

    assert changes(schema(bounded(10), BASE), schema(bounded(5), BASE)) == [
        ("Req.a", "constraint_changed", True)
    ]
    assert changes(schema(bounded(5), BASE), schema(bounded(10), BASE)) == [
        ("Req.a", "constraint_changed", False)
    ]
    assert changes(schema(BASE, bounded(5)), schema(BASE, bounded(None))) == [
        ("Resp.a", "constraint_changed", True)
    ]


def test_descriptions_and_defaults_are_not_changes() -> None:
    old = schema([Field("a", STR, required=False, default="x", description="old")], BASE)
    new = schema([Field("a", STR, required=False, default="y", description="new")], BASE)
    assert diff(old, new) == Diff(changes=())


def test_changes_are_sorted_and_the_diff_is_breaking_if_any_change_is() -> None:
    old = schema([Field("z", INT), Field("a", INT, required=False)], [Field("y", INT)])
    new = schema([Field("a", INT), Field("b", INT, required=False)], [])

    result = diff(old, new)

    assert [(c.path, c.kind) for c in result.changes] == [
        ("Req.a", "became_required"),
        ("Req.b", "field_added"),
        ("Req.z", "field_removed"),
        ("Resp.y", "field_removed"),
    ]
    assert result.breaking
    assert result.breaking_changes() == tuple(c for c in result.changes if c.breaking)
    assert diff(old, new) == result


@pytest.mark.parametrize(
    ("old", "new"),
    [((False, False), (False, True)), ((False, True), (True, True)), ((True, False), (False, False))],
)
def test_a_change_of_streaming_shape_is_breaking(old: tuple[bool, bool], new: tuple[bool, bool]) -> None:
    def shaped(client: bool, server: bool) -> Schema:
        base = schema(BASE, BASE)
        method = Method("Call", GType.ref("Req"), GType.ref("Resp"), client_streaming=client, server_streaming=server)
        return Schema(module="m", types=base.types, methods=(method,))

    result = diff(shaped(*old), shaped(*new))
    assert result.breaking
    assert [(c.path, c.kind) for c in result.changes] == [("Call", "streaming_changed")]
    assert shaped(*new).method("Call").streaming in result.changes[0].detail
