"""Calling user code that may be sync or async, without blocking the event loop.

One rule for everything the lifecycle calls (handlers, hooks, undo steps, cleanup callbacks):
an ``async def`` is awaited on the loop; a plain function runs in the default thread pool via
:func:`asyncio.to_thread`. A worker that wants a bigger pool sets the loop's default executor.

A thread cannot be interrupted, so when a timeout or deadline cancels the wait for a sync call
the caller moves on at once while the thread finishes on its own; its result is discarded.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

__all__ = ["call_any", "call_with_timeout", "callable_name", "describe_error", "is_async_callable"]


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """True for ``async def`` functions, partials of them, and objects with an async ``__call__``."""
    function = fn.__func__ if type(fn) is types.MethodType else fn
    if type(function) is types.FunctionType:  # the common case, read off its code at once
        return bool(function.__code__.co_flags & inspect.CO_COROUTINE)
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an async __call__ is what we look for
    )


async def call_any(fn: Callable[..., Any], *args: Any) -> Any:
    """Await ``fn(*args)`` if it is async, else run it in a thread; await an awaitable result."""
    if is_async_callable(fn):
        result = fn(*args)
    else:
        result = await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def call_with_timeout(
    fn: Callable[..., Any], args: tuple[Any, ...], limit: float | None, what: str
) -> Any:
    """:func:`call_any` bounded by ``limit`` seconds.

    Raises :class:`TimeoutError` naming ``what`` when this timeout fires. A ``TimeoutError``
    raised by ``fn`` itself, or a cancellation from outside, passes through unchanged.
    """
    if limit is None:
        return await call_any(fn, *args)
    scope = asyncio.timeout(limit)
    try:
        async with scope:
            return await call_any(fn, *args)
    except TimeoutError as exc:
        if scope.expired():
            raise TimeoutError(f"{what} timed out after {limit:g}s") from exc
        raise


def describe_error(exc: BaseException) -> str:
    """``Type: message`` (or just ``Type``), as lifecycle events and logs show an error."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def callable_name(fn: Callable[..., Any]) -> str:
    """A readable name for a callable: its qualified name, or its type's for other objects."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)
