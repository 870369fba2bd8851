"""The handler shape: which functions register, and what the refusal says for those that do not."""

import functools
from dataclasses import dataclass
from typing import Any, TypedDict

import pytest
from pydantic import BaseModel

from runtime import handler as top_level_handler
from runtime.errors import HandlerShapeError
from runtime.gtype import UnsupportedType
from runtime.manifest import HandlerSpec, handler
from runtime.manifest._handler import handler_mark, register_handler, shape_problem


class Req(BaseModel):
    name: str


class Resp(BaseModel):
    id: int


@dataclass
class DataReq:
    n: int


class DictResp(TypedDict):
    ok: bool


class LocalContext:
    """Stands in only by name: the shape check compares annotation names, not classes."""


class GlobalContext:
    """Stands in only by name."""


async def create_user(req: Req, lctx: LocalContext, gctx: GlobalContext) -> Resp:
    return Resp(id=1)


def get_thing(req: DataReq, lctx, gctx) -> DictResp:  # type: ignore[no-untyped-def]
    return {"ok": True}


def test_an_async_handler_registers_with_its_pascal_case_method() -> None:
    spec = register_handler(create_user, module="users")
    assert isinstance(spec, HandlerSpec)
    assert (spec.module, spec.method, spec.handler_id) == (
        "users",
        "CreateUser",
        "users.CreateUser",
    )
    assert spec.is_async and spec.function is create_user
    assert spec.types.handler == "users.CreateUser"
    assert (spec.types.request.name, spec.types.response.name) == ("Req", "Resp")


def test_a_plain_def_with_dataclass_and_typeddict_registers_as_sync() -> None:
    spec = register_handler(get_thing, module="inventory")
    assert spec.method == "GetThing" and not spec.is_async
    assert (spec.types.request.name, spec.types.response.name) == ("DataReq", "DictResp")


def test_the_decorator_works_bare_and_with_a_name() -> None:
    @handler
    async def bare(req: Req, lctx: LocalContext, gctx: GlobalContext) -> Resp: ...

    @handler(name="Ping")
    async def named(req: Req, lctx: LocalContext, gctx: GlobalContext) -> Resp: ...

    bare_mark, named_mark = handler_mark(bare), handler_mark(named)
    assert bare_mark is not None and bare_mark.name is None
    assert named_mark is not None and named_mark.name == "Ping"
    assert bare_mark.order < named_mark.order
    assert register_handler(named, module="users").handler_id == "users.Ping"
    assert register_handler(named, module="users").types.method == "Ping"
    assert handler_mark(create_user) is None
    assert top_level_handler is handler


def test_the_decorator_refuses_a_name_that_is_not_pascal_case() -> None:
    with pytest.raises(HandlerShapeError, match="PascalCase"):
        handler(name="create_user")


def test_a_keyword_only_parameter_with_a_default_is_tolerated() -> None:
    async def h(
        req: Req, lctx: LocalContext, gctx: GlobalContext, *, trace: bool = False
    ) -> Resp: ...

    assert shape_problem(h) is None


def test_string_annotations_are_resolved_and_context_names_compared_by_name() -> None:
    async def h(req: "Req", lctx: "lcc.LocalContext", gctx: "GlobalContext") -> "Resp": ...  # noqa: F821

    assert shape_problem(h) is None


async def _async_gen(req: Req, lctx: LocalContext, gctx: GlobalContext):  # type: ignore[no-untyped-def]
    yield Resp(id=1)


def _gen(req: Req, lctx: LocalContext, gctx: GlobalContext):  # type: ignore[no-untyped-def]
    yield Resp(id=1)


class _Service:
    async def method(self, req: Req, lctx: LocalContext, gctx: GlobalContext) -> Resp: ...


async def _four(req: Req, lctx: LocalContext, gctx: GlobalContext, extra: int) -> Resp: ...


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (lambda req, lctx, gctx: None, "lambda"),
        (_async_gen, "async generator"),
        (_gen, "generator"),
        (Req, "class"),
        (functools.partial(_four, extra=1), "functools.partial"),
        (_Service().method, "bound method"),
        (print, "builtin_function_or_method"),
    ],
)
def test_things_that_are_not_plain_functions_are_refused(candidate: Any, reason: str) -> None:
    with pytest.raises(HandlerShapeError) as info:
        register_handler(candidate, module="users")
    assert reason in str(info.value)
    assert "is not a handler" in str(info.value)


def _problem(source: str) -> str:
    namespace: dict[str, Any] = {"Req": Req, "Resp": Resp, "Any": Any, "LocalContext": LocalContext}
    exec(source, namespace)
    fn = namespace["h"]
    with pytest.raises(HandlerShapeError) as info:
        register_handler(fn, module="users")
    message = str(info.value)
    assert message.startswith("users: h (<string>:"), message
    return message


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("async def h(req: Req, lctx) -> Resp: ...", "takes 2 positional parameter(s)"),
        ("async def h(req: Req, lctx, gctx, x) -> Resp: ...", "takes 4 positional parameter(s)"),
        ("async def h(req: Req, lctx, gctx, *rest) -> Resp: ...", "takes *rest"),
        ("async def h(req: Req, lctx, gctx, **kw) -> Resp: ...", "takes **kw"),
        (
            "async def h(req: Req, lctx, gctx, *, flag) -> Resp: ...",
            "required keyword-only parameter 'flag'",
        ),
        (
            "async def h(req, lctx, gctx) -> Resp: ...",
            "parameter 'req' (the request) has no annotation",
        ),
        ("async def h(req: int, lctx, gctx) -> Resp: ...", "parameter 'req' (the request) is int"),
        ("async def h(req: 'Missing', lctx, gctx) -> Resp: ...", "cannot be resolved"),
        (
            "async def h(req: Req, lctx, gctx): ...",
            "the return annotation (the response) has no annotation",
        ),
        (
            "async def h(req: Req, lctx, gctx) -> list[Resp]: ...",
            "the return annotation (the response) is list",
        ),
        ("async def h(req: Req, lctx: Any, gctx) -> Resp: ...", "parameter 'lctx' is annotated"),
        (
            "async def h(req: Req, lctx: LocalContext, gctx: LocalContext) -> Resp: ...",
            "it must be GlobalContext",
        ),
        (
            "async def h(req: Req, lctx: 'GlobalContext', gctx) -> Resp: ...",
            "it must be LocalContext",
        ),
    ],
)
def test_a_wrong_signature_is_refused_with_what_is_wrong(source: str, reason: str) -> None:
    assert reason in _problem(source)


def test_a_message_field_the_analyzer_cannot_map_is_reported_by_the_analyzer() -> None:
    class Odd(BaseModel):
        value: complex

    async def h(req: Odd, lctx: LocalContext, gctx: GlobalContext) -> Resp: ...

    with pytest.raises(UnsupportedType, match="value"):
        register_handler(h, module="users")


def test_a_function_name_that_gives_no_method_name_needs_an_explicit_name() -> None:
    namespace: dict[str, Any] = {"Req": Req, "Resp": Resp}
    exec("async def _1(req: Req, lctx, gctx) -> Resp: ...", namespace)
    with pytest.raises(HandlerShapeError, match="not PascalCase; pass @handler"):
        register_handler(namespace["_1"], module="users")


def test_a_module_name_must_be_lower_snake_case() -> None:
    with pytest.raises(HandlerShapeError, match="lower_snake_case"):
        register_handler(create_user, module="Users")
