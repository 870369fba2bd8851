"""Marking handlers and refusing functions that do not have the handler shape.

A handler is a named function with exactly three positional parameters::

    @handler
    async def create_user(req: CreateUserRequest, lctx: LocalContext, gctx: GlobalContext) -> User:
        ...

``async def`` runs on the event loop; a plain ``def`` is accepted too and runs off the loop. The
request and the return annotations must be message types (a pydantic model, a dataclass or a
TypedDict), or, for a streaming method, an ``AsyncIterator`` of one::

    async def watch(req: Watch, lctx: LocalContext, gctx: GlobalContext) -> AsyncIterator[Event]:
        yield ...                                             # server streaming
    async def upload(reqs: AsyncIterator[Item], lctx, gctx) -> Summary: ...   # client streaming

A server-streaming handler is an ``async def`` generator (or an ``async def`` returning an async
iterator); streaming handlers must be ``async def``, since a stream lives on the event loop. ``lctx`` and ``gctx`` may be left unannotated; when annotated, the annotation must be
named ``LocalContext`` / ``GlobalContext``. They are compared by name so that this layer need
not import the context packages, which sit further down the request flow.

:func:`handler` only marks a function; the checks run in :func:`register_handler`, so a module
imports cleanly and its loader reports every problem with the function's name and location.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from pydantic import BaseModel
from typing_extensions import is_typeddict

from runtime.errors import HandlerShapeError
from runtime.gtype import HandlerTypes, analyze_handler, method_name, stream_item
from runtime.manifest._names import METHOD_NAME, MODULE_NAME
from runtime.manifest._source import source_location

__all__ = ["HandlerMark", "HandlerSpec", "handler", "handler_mark", "register_handler"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK_ATTR = "__modrpc_handler__"
_ORDER = itertools.count()
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True, slots=True)
class HandlerMark:
    """What ``@handler`` attaches to a function."""

    name: str | None
    """The gRPC method name given with ``@handler(name=...)``; None derives it from the function."""
    order: int
    """Process-wide decoration order, so a module's handlers are listed in definition order."""


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler: a function that has the handler shape, plus its analysed types."""

    module: str
    method: str
    """The gRPC method name, PascalCase (``CreateUser``)."""
    handler_id: str
    """``module.Method`` (``users.CreateUser``)."""
    function: Callable[..., Any]
    is_async: bool
    """True for ``async def`` (generators included); a plain ``def`` runs in a worker thread."""
    types: HandlerTypes

    def location(self) -> tuple[str, int]:
        """(source file relative to its import root, line) of the function."""
        return source_location(self.function)


@overload
def handler(fn: F, /) -> F: ...
@overload
def handler(*, name: str | None = None) -> Callable[[F], F]: ...
def handler(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a function as a handler of its module; use bare or as ``@handler(name="Method")``.

    The method name defaults to the function name in PascalCase (``create_user`` ->
    ``CreateUser``). The shape is checked when the module is loaded, not here.

        >>> @handler(name="Ping")
        ... async def ping(req, lctx, gctx): ...
        >>> handler_mark(ping).name
        'Ping'
    """
    if name is not None and not METHOD_NAME.fullmatch(name):
        raise HandlerShapeError(
            f"@handler(name={name!r}): a method name must be PascalCase, like CreateUser"
        )

    def mark(target: F) -> F:
        try:
            setattr(target, _MARK_ATTR, HandlerMark(name=name, order=next(_ORDER)))
        except (AttributeError, TypeError) as exc:
            raise HandlerShapeError(
                f"@handler cannot mark {target!r}: handlers are functions"
            ) from exc
        return target

    return mark if fn is None else mark(fn)


def handler_mark(obj: object) -> HandlerMark | None:
    """The mark ``@handler`` left on ``obj``, or None when it is not marked."""
    mark = getattr(obj, _MARK_ATTR, None)
    return mark if isinstance(mark, HandlerMark) else None


def register_handler(fn: Callable[..., Any], *, module: str) -> HandlerSpec:
    """Accept ``fn`` as a handler of ``module`` iff it has the handler shape.

    Raises :class:`~runtime.errors.HandlerShapeError` naming the function and what is wrong, and
    lets :class:`runtime.gtype.UnsupportedType` through when a message field has a type the
    analyzer cannot map.
    """
    if not MODULE_NAME.fullmatch(module):
        raise HandlerShapeError(f"module name {module!r} is not lower_snake_case")
    problem = shape_problem(fn)
    if problem is not None:
        raise HandlerShapeError(f"{_describe(fn, module)} is not a handler: {problem}")
    mark = handler_mark(fn)
    method = mark.name if mark is not None and mark.name else method_name(fn.__name__)
    if not METHOD_NAME.fullmatch(method):
        raise HandlerShapeError(
            f"{_describe(fn, module)} is not a handler: its name gives the method name {method!r}, "
            "which is not PascalCase; pass @handler(name=...)"
        )
    types = analyze_handler(fn, module=module, method=method)
    handler_id = f"{module}.{method}"
    return HandlerSpec(
        module=module,
        method=method,
        handler_id=handler_id,
        function=fn,
        is_async=inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn),
        types=types,
    )


def shape_problem(fn: object) -> str | None:
    """What keeps ``fn`` from being a handler, in words, or None when it has the handler shape."""
    kind = _kind_problem(fn)
    if kind is not None:
        return kind
    assert inspect.isfunction(fn)
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError) as exc:
        return f"its signature cannot be read ({exc})"
    for p in params:
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            return f"it takes *{p.name}; a handler takes exactly (req, lctx, gctx)"
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return f"it takes **{p.name}; a handler takes exactly (req, lctx, gctx)"
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty:
            return f"it has a required keyword-only parameter {p.name!r}"
    positional = [p for p in params if p.kind in _POSITIONAL]
    if len(positional) != 3:
        return f"it takes {len(positional)} positional parameter(s); a handler takes exactly three: (req, lctx, gctx)"
    req, lctx, gctx = positional
    returns, response_streamed = _message_problem(
        fn, inspect.signature(fn).return_annotation, "the return annotation (the response)"
    )
    if inspect.isasyncgenfunction(fn) and not response_streamed:
        return "it is an async generator, but its return annotation is not AsyncIterator[...]; a handler that yields streams its response"
    problem, request_streamed = _message_problem(fn, req.annotation, f"parameter {req.name!r} (the request)")
    if problem is not None:
        return problem
    for param, expected in ((lctx, "LocalContext"), (gctx, "GlobalContext")):
        if param.annotation is inspect.Parameter.empty:
            continue
        shown = _annotation_name(param.annotation)
        if shown != expected:
            return f"parameter {param.name!r} is annotated {shown or param.annotation!r}; it must be {expected}"
    if returns is not None:
        return returns
    if (request_streamed or response_streamed) and not inspect.iscoroutinefunction(fn) and not inspect.isasyncgenfunction(fn):
        return "it streams, so it must be an async def (a stream lives on the event loop)"
    return None


def _kind_problem(fn: object) -> str | None:
    if isinstance(fn, type):
        return "it is a class; a handler is a function"
    if isinstance(fn, functools.partial):
        return "it is a functools.partial; register a plain function"
    if inspect.ismethod(fn):
        return "it is a bound method; a handler is a module-level function"
    if not inspect.isfunction(fn):
        return f"it is a {type(fn).__name__}, not a function"
    if fn.__name__ == "<lambda>":
        return "it is a lambda; a handler is a named function"
    if inspect.isgeneratorfunction(fn):
        return "it is a generator; a streaming handler is an async def generator"
    return None


def _message_problem(fn: Callable[..., Any], annotation: Any, what: str) -> tuple[str | None, bool]:
    """What is wrong with a request or response annotation (None: nothing), and whether it is a
    stream (``AsyncIterator[M]``)."""
    if annotation is inspect.Parameter.empty:
        return f"{what} has no annotation; annotate it with a pydantic model, dataclass or TypedDict", False
    # The same evaluation typing.get_type_hints performs, one annotation at a time. A quoted
    # annotation under ``from __future__ import annotations`` is a string of a string, hence the loop.
    for _ in range(3):
        if not isinstance(annotation, str):
            break
        try:
            annotation = eval(annotation, getattr(fn, "__globals__", {}))
        except Exception as exc:
            return f"{what} {annotation!r} cannot be resolved ({type(exc).__name__}: {exc})", False
    message, streamed = stream_item(annotation)
    if not is_message_type(message):
        shown = getattr(message, "__name__", None) or repr(message)
        kind = "streams" if streamed else "is"
        return f"{what} {kind} {shown}, which is not a pydantic model, dataclass or TypedDict", streamed
    return None, streamed


def is_message_type(annotation: object) -> bool:
    """True for the types a request or response may have: pydantic model, dataclass, TypedDict."""
    if not isinstance(annotation, type):
        return False
    return (
        issubclass(annotation, BaseModel)
        or dataclasses.is_dataclass(annotation)
        or is_typeddict(annotation)
    )


def _annotation_name(annotation: object) -> str:
    """``LocalContext`` for the class, the string ``"LocalContext"`` or ``"lcc.LocalContext"``."""
    if isinstance(annotation, str):
        return annotation.strip().strip("'\"").rpartition(".")[2]
    name = getattr(annotation, "__name__", "")
    return name if isinstance(annotation, type) and isinstance(name, str) else ""


def _describe(fn: object, module: str) -> str:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    try:
        file, line = source_location(fn)
    except Exception:  # a location is a courtesy in an error message, never a second failure
        return f"{module}: {name}"
    return f"{module}: {name} ({file}:{line})"
