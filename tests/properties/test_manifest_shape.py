"""Property 1: a handler is accepted iff it has the handler shape.

Functions of many shapes are written as source text and executed, then registered. The
expected verdict is computed from the shape description alone, independently of the checker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypedDict

from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from runtime.errors import HandlerShapeError
from runtime.manifest import HandlerSpec
from runtime.manifest._handler import register_handler


class Req(BaseModel):
    name: str


class Resp(BaseModel):
    id: int


@dataclass
class DataReq:
    n: int


class TD(TypedDict):
    ok: bool


class LocalContext:
    """Matched by name only."""


class GlobalContext:
    """Matched by name only."""


NAMESPACE: dict[str, Any] = {
    "Req": Req,
    "Resp": Resp,
    "DataReq": DataReq,
    "TD": TD,
    "LocalContext": LocalContext,
    "GlobalContext": GlobalContext,
    "Any": Any,
    "AsyncIterator": AsyncIterator,
    # Dotted annotations resolve through a module, as they would in real code.
    "lcc": SimpleNamespace(LocalContext=LocalContext),
    "context": SimpleNamespace(GlobalContext=GlobalContext),
}

MESSAGES = ["Req", "DataReq", "TD", "'Req'", "'TD'"]
STREAMS = ["AsyncIterator[Req]", "AsyncIterator[TD]", "'AsyncIterator[DataReq]'"]
"""A stream of messages: a client-streaming request or a server-streaming response."""
NOT_MESSAGES = [
    "int", "str", "list[Req]", "Req | None", "dict[str, int]", "Any", "'Missing'", "AsyncIterator[int]",
]  # fmt: skip
LCTX_OK = [None, "LocalContext", "'LocalContext'", "'lcc.LocalContext'"]
GCTX_OK = [None, "GlobalContext", "'GlobalContext'", "'context.GlobalContext'"]
CTX_BAD = ["Any", "int", "'Context'"]

KINDS = ["async", "sync", "lambda", "generator", "async_generator", "class", "partial", "bound"]


@dataclass(frozen=True)
class Shape:
    kind: str
    positional: tuple[str | None, ...]
    """Annotations of the positional parameters (None: unannotated)."""
    returns: str | None
    varargs: bool
    varkw: bool
    kwonly: tuple[bool, ...]
    """One entry per keyword-only parameter: does it have a default?"""
    postponed: bool
    """Written under ``from __future__ import annotations`` (every annotation a string)."""

    def is_handler(self) -> bool:
        if self.kind not in ("async", "sync", "async_generator"):
            return False
        if self.varargs or self.varkw or not all(self.kwonly) or len(self.positional) != 3:
            return False
        req, lctx, gctx = self.positional
        if not (req in MESSAGES + STREAMS and lctx in LCTX_OK and gctx in GCTX_OK and self.returns in MESSAGES + STREAMS):
            return False
        if self.kind == "async_generator":  # it yields: only a streamed response may be yielded
            return self.returns in STREAMS
        # A stream lives on the event loop: a plain def may not take or give one.
        return self.kind == "async" or (req in MESSAGES and self.returns in MESSAGES)

    def source(self) -> str:
        head = "from __future__ import annotations\n" if self.postponed else ""
        return head + self._definition()

    def _definition(self) -> str:
        names = ["req", "lctx", "gctx", "extra", "more"]
        params = [
            f"{names[i]}: {ann}" if ann else names[i] for i, ann in enumerate(self.positional)
        ]
        if self.varargs:
            params.append("*args")
        elif self.kwonly:
            params.append("*")
        params += [
            f"k{i}=1" if has_default else f"k{i}" for i, has_default in enumerate(self.kwonly)
        ]
        if self.varkw:
            params.append("**kwargs")
        signature = ", ".join(params)
        returns = f" -> {self.returns}" if self.returns else ""
        if self.kind == "lambda":
            plain = ", ".join(names[: len(self.positional)])
            return f"h = lambda {plain}: None"
        if self.kind == "class":
            return f"class h:\n    def __init__(self, {signature}){returns}:\n        pass"
        if self.kind == "bound":
            return (
                f"class C:\n    async def h(self, {signature}){returns}:\n        pass\nh = C().h"
            )
        if self.kind == "partial":
            return f"import functools\nasync def inner({signature}){returns}:\n    pass\nh = functools.partial(inner)"
        prefix = "async def" if self.kind in ("async", "async_generator") else "def"
        body = "yield None" if self.kind.endswith("generator") else "pass"
        return f"{prefix} h({signature}){returns}:\n    {body}"


def _shapes() -> st.SearchStrategy[Shape]:
    annotation = st.sampled_from(MESSAGES + STREAMS + NOT_MESSAGES + [None])
    context = st.sampled_from(LCTX_OK + GCTX_OK + CTX_BAD)

    @st.composite
    def build(draw: st.DrawFn) -> Shape:
        if draw(st.booleans()):
            # Half the examples are handlers, so acceptance is explored as much as refusal.
            kind = draw(st.sampled_from(["async", "sync", "async_generator"]))
            streams = kind != "sync" and draw(st.booleans())
            return Shape(
                kind=kind,
                positional=(
                    draw(st.sampled_from(MESSAGES + STREAMS if streams else MESSAGES)),
                    draw(st.sampled_from(LCTX_OK)),
                    draw(st.sampled_from(GCTX_OK)),
                ),
                returns=draw(st.sampled_from(STREAMS if kind == "async_generator" else MESSAGES + STREAMS if streams else MESSAGES)),
                varargs=False,
                varkw=False,
                kwonly=tuple(draw(st.lists(st.just(True), max_size=2))),
                postponed=draw(st.booleans()),
            )
        kind = draw(st.sampled_from(KINDS))
        arity = draw(st.sampled_from([3, 3, 3, 0, 1, 2, 4, 5]))
        first = (draw(annotation),) if arity else ()
        rest = tuple(draw(context) for _ in range(max(0, min(arity, 3) - 1)))
        extra = tuple(draw(annotation) for _ in range(max(0, arity - 3)))
        weird = draw(st.integers(0, 3)) == 0
        return Shape(
            kind=kind,
            positional=first + rest + extra,
            returns=draw(annotation),
            varargs=weird and draw(st.booleans()),
            varkw=weird and draw(st.booleans()),
            kwonly=tuple(draw(st.lists(st.booleans(), max_size=2))) if weird else (),
            postponed=draw(st.booleans()),
        )

    return build()


def _define(shape: Shape) -> Any:
    namespace = dict(NAMESPACE)
    # dont_inherit: only the shape decides whether annotations are postponed, not this file.
    exec(compile(shape.source(), "<string>", "exec", dont_inherit=True), namespace)
    return namespace["h"]


@settings(max_examples=300, deadline=None)
@given(shape=_shapes())
def test_a_function_is_accepted_iff_it_has_the_handler_shape(shape: Shape) -> None:
    """Property 1: A handler is accepted iff it has the handler shape."""
    fn = _define(shape)
    event("handler shape" if shape.is_handler() else f"not a handler: {shape.kind}")
    if shape.is_handler():
        spec = register_handler(fn, module="shapes")
        assert isinstance(spec, HandlerSpec)
        assert spec.is_async == (shape.kind != "sync")
        assert spec.types.client_streaming == (shape.positional[0] in STREAMS)
        assert spec.types.server_streaming == (shape.returns in STREAMS)
        assert spec.handler_id == "shapes.H" and spec.function is fn
    else:
        try:
            register_handler(fn, module="shapes")
        except HandlerShapeError as exc:
            assert "is not a handler" in str(exc)
            assert "shapes: " in str(exc)
        else:
            raise AssertionError(f"accepted a function that is not a handler:\n{shape.source()}")
