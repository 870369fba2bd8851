"""The analyzer: annotations to GTypes, handler analysis, build_schema and canonical JSON."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Mapping,
    Sequence,
)
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Optional

import annotated_types as at
import pytest
import typing_extensions
from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    BeforeValidator,
    EmailStr,
    Field,
    HttpUrl,
    StringConstraints,
    computed_field,
    field_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

from runtime.gtype import (
    Constraints,
    GType,
    HandlerTypes,
    Method,
    Schema,
    UnsupportedType,
    analyze_handler,
    analyze_type,
    build_schema,
    canonical_json,
    fingerprint,
    method_name,
    validate,
)
from runtime.gtype import Field as GField

# -- models used across tests -------------------------------------------------------------------


class Color(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


def upper_only(value: str) -> str:
    if value != value.upper():
        raise ValueError("must be upper case")
    return value


class Item(BaseModel):
    """One line of an order."""

    sku: Annotated[str, AfterValidator(upper_only)]
    qty: int = Field(ge=1, le=100, description="How many units.")


class CreateOrder(BaseModel):
    customer: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    email: EmailStr
    items: list[Item]
    tags: dict[str, int] = Field(default_factory=dict)
    color: Color = Color.RED
    priority: Priority | None = None
    note: str | None = None


class Order(BaseModel):
    id: uuid.UUID
    created: datetime
    items: list[Item]


async def create_order(req: CreateOrder, lctx: object, gctx: object) -> Order:
    raise NotImplementedError


def analyze(annotation: object) -> tuple[GType, dict[str, GType]]:
    types: dict[str, GType] = {}
    node = analyze_type(annotation, handler="shop.Check", field="request", types=types)
    return node, types


def field_type(types: dict[str, GType], type_name: str, field: str) -> GType:
    found = types[type_name].field(field)
    assert found is not None
    return found.type


# -- handler analysis ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "method"),
    [
        ("create_user", "CreateUser"),
        ("get_user_by_id", "GetUserById"),
        ("ping", "Ping"),
        ("CreateUser", "CreateUser"),
    ],
)
def test_method_name_is_the_pascal_case_of_the_function_name(function: str, method: str) -> None:
    assert method_name(function) == method


def test_analyze_handler_names_the_handler_and_refs_request_and_response() -> None:
    result = analyze_handler(create_order, module="shop")

    assert result == HandlerTypes(
        handler="shop.CreateOrder",
        method="CreateOrder",
        request=GType.ref("CreateOrder"),
        response=GType.ref("Order"),
        types=result.types,
    )
    assert [t.name for t in result.types] == ["Color", "CreateOrder", "Item", "Order", "Priority"]


def test_analyze_handler_takes_an_explicit_method_name() -> None:
    assert analyze_handler(create_order, module="shop", method="PlaceOrder").handler == (
        "shop.PlaceOrder"
    )


def test_a_handler_without_a_request_annotation_is_refused_by_name() -> None:
    async def list_orders(req, lctx, gctx) -> Order:  # type: ignore[no-untyped-def]
        raise NotImplementedError

    with pytest.raises(UnsupportedType, match=r"'shop\.ListOrders'.*'request'.*no annotation"):
        analyze_handler(list_orders, module="shop")


def test_a_handler_without_a_return_annotation_is_refused_by_name() -> None:
    async def list_orders(req: CreateOrder, lctx: object, gctx: object):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    with pytest.raises(UnsupportedType, match=r"'shop\.ListOrders'.*'response'.*not annotated"):
        analyze_handler(list_orders, module="shop")


async def watch_orders(req: CreateOrder, lctx: object, gctx: object) -> AsyncIterator[Order]:
    yield Order.model_construct()


async def upload_items(reqs: AsyncIterable[Item], lctx: object, gctx: object) -> Order:
    raise NotImplementedError


async def trade(reqs: AsyncIterator[Item], lctx: object, gctx: object) -> AsyncGenerator[Order, None]:
    yield Order.model_construct()


@pytest.mark.parametrize(
    ("fn", "request_type", "response_type", "shape"),
    [
        (create_order, "CreateOrder", "Order", "unary"),
        (watch_orders, "CreateOrder", "Order", "server"),
        (upload_items, "Item", "Order", "client"),
        (trade, "Item", "Order", "bidi"),
    ],
)
def test_an_async_iterator_annotation_makes_that_side_a_stream_of_its_message(
    fn: Callable[..., Any], request_type: str, response_type: str, shape: str
) -> None:
    result = analyze_handler(fn, module="shop")
    assert (result.request, result.response) == (GType.ref(request_type), GType.ref(response_type))
    method = build_schema("shop", [result]).methods[0]
    assert method.streaming == shape
    assert Method.from_json(method.to_json()) == method


def test_a_unary_method_serialises_exactly_as_before_streams_existed() -> None:
    """Unary methods keep their canonical JSON, so every recorded fingerprint still holds."""
    method = build_schema("shop", [analyze_handler(create_order, module="shop")]).methods[0]
    assert set(method.to_json()) == {"name", "request", "response"}


def test_a_stream_of_something_that_is_not_a_model_is_refused() -> None:
    async def numbers(req: CreateOrder, lctx: object, gctx: object) -> AsyncIterator[int]:
        yield 1

    with pytest.raises(UnsupportedType, match=r"'shop\.Numbers'.*'response'.*AsyncIterator"):
        analyze_handler(numbers, module="shop")


def test_a_request_that_is_not_a_model_is_refused() -> None:
    async def count(req: int, lctx: object, gctx: object) -> Order:
        raise NotImplementedError

    with pytest.raises(UnsupportedType, match=r"'shop\.Count'.*pydantic model, dataclass"):
        analyze_handler(count, module="shop")


# -- pydantic models ----------------------------------------------------------------------------


def test_pydantic_fields_keep_order_requiredness_defaults_and_descriptions() -> None:
    _, types = analyze(CreateOrder)
    order = types["CreateOrder"]

    assert [f.name for f in order.fields] == [
        "customer",
        "email",
        "items",
        "tags",
        "color",
        "priority",
        "note",
    ]
    assert [f.required for f in order.fields] == [True, True, True, False, False, False, False]
    assert order.field("tags") == GField(
        "tags",
        GType.map(GType.primitive("str"), GType.primitive("int")),
        required=False,
        default={},
    )
    assert order.field("color") == GField(
        "color", GType.ref("Color"), required=False, default="red"
    )
    assert types["Item"].description == "One line of an order."
    qty = types["Item"].field("qty")
    assert qty is not None and qty.description == "How many units."


def test_optional_with_none_default_is_nullable_and_not_required() -> None:
    _, types = analyze(CreateOrder)
    note = types["CreateOrder"].field("note")

    assert note == GField("note", GType.primitive("str", nullable=True), required=False)


def test_enums_become_named_enum_types_with_their_wire_values() -> None:
    _, types = analyze(CreateOrder)

    assert types["Color"] == GType.enum("Color", ["red", "blue"])
    assert types["Priority"] == GType.enum("Priority", [1, 2])
    assert field_type(types, "CreateOrder", "priority") == GType.ref("Priority", nullable=True)


def test_constraints_come_from_field_annotated_types_and_string_constraints() -> None:
    _, types = analyze(CreateOrder)

    assert field_type(types, "CreateOrder", "customer").constraints == Constraints(
        min_length=1, max_length=40
    )
    assert field_type(types, "Item", "qty").constraints == Constraints(ge=1, le=100)
    assert field_type(types, "CreateOrder", "email").constraints == Constraints(format="email")


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (Annotated[int, at.Gt(0), at.Lt(10)], GType.primitive("int", constraints=Constraints(gt=0, lt=10))),
        (Annotated[float, at.Interval(ge=0.5, le=2)], GType.primitive("float", constraints=Constraints(ge=0.5, le=2))),
        (Annotated[str, at.Len(2, 4)], GType.primitive("str", constraints=Constraints(min_length=2, max_length=4))),
        (Annotated[str, Field(pattern=r"^[a-z]+$")], GType.primitive("str", constraints=Constraints(pattern=r"^[a-z]+$"))),
        (Annotated[list[int], at.MinLen(1)], GType.array(GType.primitive("int"), constraints=Constraints(min_length=1))),
        (Annotated[bytes, at.MaxLen(8)], GType.primitive("bytes", constraints=Constraints(max_length=8))),
        (Annotated[int | None, at.Ge(0)], GType.primitive("int", nullable=True, constraints=Constraints(ge=0))),
        (Annotated[str, "a marker for some other tool"], GType.primitive("str")),
    ],
)  # fmt: skip
def test_annotated_constraints_map_to_gtype_constraints(
    annotation: object, expected: GType
) -> None:
    assert analyze(annotation)[0] == expected


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, GType.primitive("str")),
        (int, GType.primitive("int")),
        (float, GType.primitive("float")),
        (bool, GType.primitive("bool")),
        (bytes, GType.primitive("bytes")),
        (datetime, GType.primitive("datetime")),
        (date, GType.primitive("date")),
        (uuid.UUID, GType.primitive("str", constraints=Constraints(format="uuid"))),
        (EmailStr, GType.primitive("str", constraints=Constraints(format="email"))),
        (HttpUrl, GType.primitive("str", constraints=Constraints(format="url"))),
        (AnyUrl, GType.primitive("str", constraints=Constraints(format="url"))),
        (Literal["a", "b"], GType.literal("a", "b")),
        (Literal[1, 2, None], GType.literal(1, 2, nullable=True)),
        (Optional[int], GType.primitive("int", nullable=True)),  # noqa: UP045
        (int | str, GType.union(GType.primitive("int"), GType.primitive("str"))),
        (int | str | None, GType.union(GType.primitive("int"), GType.primitive("str"), nullable=True)),
        (list[str], GType.array(GType.primitive("str"))),
        (Sequence[int], GType.array(GType.primitive("int"))),
        (dict[int, bool], GType.map(GType.primitive("int"), GType.primitive("bool"))),
        (Mapping[str, float], GType.map(GType.primitive("str"), GType.primitive("float"))),
        (typing_extensions.NewType("UserId", str), GType.primitive("str")),
    ],
)  # fmt: skip
def test_supported_annotations_map_to_their_gtype(annotation: object, expected: GType) -> None:
    assert analyze(annotation)[0] == expected


# -- dataclasses and TypedDict ------------------------------------------------------------------


@dataclasses.dataclass
class Address:
    street: str
    zip_code: Annotated[str, at.Len(5, 5)] = "00000"
    floor: int | None = None
    lines: list[str] = dataclasses.field(default_factory=list, metadata={"description": "Extra."})


class Meta(typing_extensions.TypedDict, total=False):
    source: typing_extensions.Required[str]
    retries: int


class Labels(typing_extensions.TypedDict):
    name: str
    hint: typing_extensions.NotRequired[str]


def test_dataclass_fields_have_requiredness_defaults_and_no_invented_docstring() -> None:
    _, types = analyze(Address)
    address = types["Address"]

    assert address.description == ""
    assert address.fields == (
        GField("street", GType.primitive("str")),
        GField(
            "zip_code",
            GType.primitive("str", constraints=Constraints(min_length=5, max_length=5)),
            required=False,
            default="00000",
        ),
        GField("floor", GType.primitive("int", nullable=True), required=False),
        GField(
            "lines",
            GType.array(GType.primitive("str")),
            required=False,
            default=[],
            description="Extra.",
        ),
    )


def test_typeddict_required_keys_follow_total_required_and_not_required() -> None:
    _, meta = analyze(Meta)
    _, labels = analyze(Labels)

    assert [(f.name, f.required) for f in meta["Meta"].fields] == [
        ("source", True),
        ("retries", False),
    ]
    assert [(f.name, f.required) for f in labels["Labels"].fields] == [
        ("name", True),
        ("hint", False),
    ]


# -- recursion and names ------------------------------------------------------------------------


class TreeNode(BaseModel):
    label: str
    children: list[TreeNode] = Field(default_factory=list)
    parent: Optional[TreeNode] = None  # noqa: UP045


class Ping(BaseModel):
    pong: Optional[Pong] = None  # noqa: UP045


class Pong(BaseModel):
    ping: Ping


TreeNode.model_rebuild()
Ping.model_rebuild()


def test_recursive_models_refer_to_themselves_by_ref() -> None:
    root, types = analyze(TreeNode)

    assert root == GType.ref("TreeNode")
    assert field_type(types, "TreeNode", "children") == GType.array(GType.ref("TreeNode"))
    assert field_type(types, "TreeNode", "parent") == GType.ref("TreeNode", nullable=True)
    schema = Schema(module="tree", types=tuple(types.values()))
    value = {"label": "a", "children": [{"label": "b", "children": [{"label": 3}]}]}
    assert [v.path for v in validate(value, root, schema)] == ["children[0].children[0].label"]


def test_mutually_recursive_models_are_each_described_once() -> None:
    _, types = analyze(Ping)

    assert sorted(types) == ["Ping", "Pong"]
    assert field_type(types, "Pong", "ping") == GType.ref("Ping")


def test_two_different_classes_with_one_name_are_refused() -> None:
    first = type("Thing", (BaseModel,), {"__annotations__": {"a": int}})
    second = type("Thing", (BaseModel,), {"__annotations__": {"b": str}})
    holder = type("Holder", (BaseModel,), {"__annotations__": {"x": first, "y": second}})

    with pytest.raises(UnsupportedType, match="two different types are named Thing"):
        analyze(holder)


def test_build_schema_refuses_one_name_for_two_different_types() -> None:
    one = HandlerTypes("m.A", "A", GType.ref("Req"), GType.ref("Req"), (GType.object("Req", []),))
    two = HandlerTypes(
        "m.B",
        "B",
        GType.ref("Req"),
        GType.ref("Req"),
        (GType.object("Req", [GField("x", GType.primitive("int"))]),),
    )

    with pytest.raises(UnsupportedType, match=r"'m\.B'.*two different types are named Req"):
        build_schema("m", [one, two])


def test_build_schema_unions_types_and_sorts_methods() -> None:
    async def get_order(req: Order, lctx: object, gctx: object) -> Order:
        raise NotImplementedError

    schema = build_schema(
        "shop",
        [analyze_handler(get_order, module="shop"), analyze_handler(create_order, module="shop")],
    )

    assert [m.name for m in schema.methods] == ["CreateOrder", "GetOrder"]
    assert [t.name for t in schema.types] == ["Color", "CreateOrder", "Item", "Order", "Priority"]


def test_build_schema_refuses_two_handlers_for_one_method() -> None:
    handler = analyze_handler(create_order, module="shop")

    with pytest.raises(ValueError, match="two handlers for method 'CreateOrder'"):
        build_schema("shop", [handler, handler])


# -- unsupported annotations --------------------------------------------------------------------


class Opaque:
    pass


def lower(value: str) -> str:
    return value.lower()


@pytest.mark.parametrize(
    ("annotation", "type_shown", "reason"),
    [
        (Any, "Any", "say nothing about the wire format"),
        (object, "object", "say nothing about the wire format"),
        (set[int], "set", "sets are not supported"),
        (frozenset[str], "frozenset", "sets are not supported"),
        (tuple[int, str], "tuple", "tuples are not supported"),
        (Callable[[int], int], "Callable", "supported are"),
        (Opaque, "Opaque", "supported are"),
        (Decimal, "Decimal", "supported are"),
        (list, "list", "needs its item types"),
        (dict, "dict", "needs its item types"),
        (dict[float, int], "dict", "map keys must be str or int"),
        (dict[bool, int], "dict", "map keys must be str or int"),
        (Literal["a", 1], "Literal", "all str, all int or all bool"),
        (Annotated[int, at.MultipleOf(3)], "MultipleOf", "not supported"),
        (Annotated[str, at.Ge(3)], "3", "ge does not apply to str"),
        (Annotated[str, BeforeValidator(lower)], "BeforeValidator", "only after-validators"),
        (Annotated[str, AfterValidator(lambda v: v)], "AfterValidator", "not lambdas"),
        (Annotated[str, Field(max_digits=3)], "_PydanticGeneralMetadata", "'max_digits' is not supported"),
    ],
)  # fmt: skip
def test_unsupported_annotations_name_handler_field_and_type(
    annotation: object, type_shown: str, reason: str
) -> None:
    # Dataclasses, because pydantic itself refuses some of these types when building a model.
    model = dataclasses.make_dataclass("Bad", [("value", annotation)])
    wrapper = dataclasses.make_dataclass("Outer", [("items", list[model])])  # type: ignore[valid-type]

    with pytest.raises(UnsupportedType) as caught:
        analyze_type(wrapper, handler="shop.Check", field="request", types={})

    message = str(caught.value)
    assert "'shop.Check'" in message
    assert "'request.items[].value'" in message
    assert type_shown in message
    assert reason in message
    assert caught.value.handler == "shop.Check"
    assert caught.value.field == "request.items[].value"


@pytest.mark.parametrize(
    ("annotation", "where"),
    [
        (list[int | None], "request.scores[]"),
        (list[Optional[Address]], "request.scores[]"),  # noqa: UP045
        (dict[str, int | None], "request.scores{}"),
    ],
)
def test_null_list_items_and_map_values_are_refused_naming_the_field(annotation: object, where: str) -> None:
    """A null item would silently become 0 on the wire, where repeated fields have no presence."""
    model = type("Scores", (BaseModel,), {"__annotations__": {"scores": annotation}})
    with pytest.raises(UnsupportedType, match="cannot be null on the wire") as caught:
        analyze(model)
    assert caught.value.field == where


def test_map_values_appear_in_the_field_path() -> None:
    with pytest.raises(UnsupportedType, match=r"'request\.tags\{\}'.*set"):
        analyze(type("Tags", (BaseModel,), {"__annotations__": {"tags": dict[str, set[int]]}}))


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (type("Camel", (BaseModel,), {"__annotations__": {"userName": str}}), "lower_snake_case"),
        (type("snake_model", (BaseModel,), {"__annotations__": {"a": str}}), "PascalCase"),
        (type("Aliased", (BaseModel,), {"__annotations__": {"a": str}, "a": Field(alias="b")}), "aliases"),
    ],
)  # fmt: skip
def test_names_that_cannot_be_protobuf_names_are_refused(model: type, reason: str) -> None:
    with pytest.raises(UnsupportedType, match=reason):
        analyze(model)


def test_computed_fields_are_refused() -> None:
    class WithTotal(BaseModel):
        a: int

        @computed_field  # type: ignore[prop-decorator]
        @property
        def total(self) -> int:
            return self.a

    with pytest.raises(UnsupportedType, match="computed fields"):
        analyze(WithTotal)


def test_before_mode_field_validators_are_refused() -> None:
    class Normalised(BaseModel):
        name: str

        @field_validator("name", mode="before")
        @classmethod
        def strip(cls, value: Any) -> Any:
            return value

    with pytest.raises(UnsupportedType, match="'before' mode"):
        analyze(Normalised)


# -- custom validators --------------------------------------------------------------------------


class Signup(BaseModel):
    handle: str

    @field_validator("handle")
    @classmethod
    def no_spaces(cls, value: str) -> str:
        if " " in value:
            raise ValueError("no spaces")
        return value


def test_after_validators_become_registered_custom_constraints() -> None:
    root, types = analyze(Item)
    schema = Schema(module="shop", types=tuple(types.values()))
    name = f"{__name__}:upper_only"

    assert field_type(types, "Item", "sku").constraints.custom == (name,)
    violations = validate({"sku": "abc", "qty": 1}, root, schema)
    assert [(v.path, v.expected) for v in violations] == [
        ("sku", f"a value accepted by {name} (must be upper case)")
    ]
    assert validate({"sku": "ABC", "qty": 1}, root, schema) == []


def test_field_validators_become_registered_custom_constraints() -> None:
    root, types = analyze(Signup)
    schema = Schema(module="shop", types=tuple(types.values()))
    name = f"{__name__}:Signup.no_spaces"

    assert field_type(types, "Signup", "handle").constraints.custom == (name,)
    assert [v.expected for v in validate({"handle": "a b"}, root, schema)] == [
        f"a value accepted by {name} (no spaces)"
    ]


# -- canonical JSON and fingerprints ------------------------------------------------------------


def test_analysis_is_deterministic_in_canonical_json_and_fingerprint() -> None:
    first = build_schema("shop", [analyze_handler(create_order, module="shop")])
    second = build_schema("shop", [analyze_handler(create_order, module="shop")])

    assert canonical_json(first) == canonical_json(second)
    assert fingerprint(first) == fingerprint(second) == first.fingerprint()
    assert Schema.from_json(first.to_json()) == first


def test_canonical_json_and_fingerprint_are_pinned() -> None:
    """Changing the canonical form would re-version every module; this pins it."""
    schema = Schema(
        module="pin",
        types=(
            GType.object(
                "Req",
                [
                    GField("name", GType.primitive("str", constraints=Constraints(min_length=1))),
                    GField("tags", GType.array(GType.primitive("str")), required=False, default=[]),
                ],
            ),
            GType.enum("Kind", ["a", "b"]),
        ),
    )

    assert canonical_json(schema) == (
        '{"methods":[],"module":"pin","types":['
        '{"kind":"enum","name":"Kind","values":["a","b"]},'
        '{"fields":[{"name":"name","type":{"constraints":{"min_length":1},"kind":"primitive",'
        '"name":"str"}},{"default":[],"name":"tags","required":false,"type":{"items":'
        '{"kind":"primitive","name":"str"},"kind":"array"}}],"kind":"object","name":"Req"}]}'
    )
    assert fingerprint(schema) == fingerprint(Schema.from_json(schema.to_json()))
    assert fingerprint(schema).startswith("sha256:") and len(fingerprint(schema)) == 71


def test_fingerprint_ignores_the_order_types_were_given_in() -> None:
    a, b = GType.enum("A", ["x"]), GType.enum("B", [1])

    assert fingerprint(Schema("m", types=(a, b))) == fingerprint(Schema("m", types=(b, a)))
    assert fingerprint(Schema("m", types=(a,))) != fingerprint(Schema("m", types=(b,)))


def test_a_none_default_makes_the_field_nullable_because_pydantic_writes_null() -> None:
    @dataclasses.dataclass
    class Plain:
        limit: int = None  # type: ignore[assignment]

    class Model(BaseModel):
        limit: int = None  # type: ignore[assignment]

    for cls in (Plain, Model):
        _, types = analyze(cls)
        assert types[cls.__name__].field("limit") == GField(
            "limit", GType.primitive("int", nullable=True), required=False
        )


@pydantic_dataclass
class Invite:
    code: str

    @field_validator("code")
    @classmethod
    def no_spaces(cls, value: str) -> str:
        if " " in value:
            raise ValueError("no spaces")
        return value


def test_pydantic_dataclasses_keep_their_field_validators() -> None:
    root, types = analyze(Invite)
    schema = Schema(module="shop", types=tuple(types.values()))

    assert field_type(types, "Invite", "code").constraints.custom == (
        f"{__name__}:Invite.no_spaces",
    )
    assert [v.path for v in validate({"code": "a b"}, root, schema)] == ["code"]
