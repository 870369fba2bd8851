"""grpc's own services at the gateway (health, reflection), within the anonymous callers' budget.

Health checks and reflection need no credentials, and grpc serves them from its own servicers,
outside the routes' chain. Left so, one address could open hundreds of ``Health/Watch`` or
reflection streams and hold every slot of ``max_concurrent_calls``, callers with credentials
included. :func:`within_budget` puts each of their calls through the same
:class:`~runtime.gateway._ingress.ClientCalls` as a public route's anonymous call: at most
``max_calls_per_client`` from one address, ``max_anonymous_calls`` from all together. As for a
route, a call its caller cancels once answered (a watch it is done with), or after a second, is
told to the reset guard as no rapid reset (:class:`~runtime.limits.AnsweredStreams`).

    >>> from grpc_health.v1 import health_pb2_grpc
    >>> from runtime.health import HealthService
    >>> from runtime.gateway._ingress import ClientCalls
    >>> handler = within_budget(health_pb2_grpc.add_HealthServicer_to_server, HealthService(), ClientCalls(64, 128), AnsweredStreams())
    >>> handler.service(_Details("/grpc.health.v1.Health/Watch")).response_streaming
    True
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NamedTuple

import grpc

from runtime.errors import ResourceExhausted
from runtime.gateway._ingress import ClientCalls
from runtime.limits import PREMATURE, AnsweredStreams

__all__ = ["within_budget"]

Context = grpc.aio.ServicerContext[Any, Any]


def within_budget(
    register: Callable[[Any, Any], None], servicer: object, calls: ClientCalls, answered: AnsweredStreams
) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
    """The generic handler that serves ``servicer`` as ``register`` (a generated
    ``add_*Servicer_to_server``) would, each call counted as an anonymous one by ``calls``."""
    captured = _Captured()
    register(servicer, captured)
    if not captured.handlers:
        raise TypeError(f"{register.__name__} registered no generic handler")
    return _WithinBudget(captured.handlers, _Admission(calls, answered))


class _Captured:
    """Stands in for a server to a generated ``add_*Servicer_to_server``: keeps its handlers."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []  # type: ignore[type-arg]

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:  # type: ignore[type-arg]
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: object) -> None:
        """The same methods again, for grpc core to match: served through the generic handler."""


class _Admission:
    """Each call's admission into the budget, and what its cancellation tells the reset guard."""

    def __init__(self, calls: ClientCalls, answered: AnsweredStreams) -> None:
        self.calls = calls
        self.answered = answered

    async def admit(self, context: Context) -> None:
        try:
            self.calls.admit(ClientCalls.address(context), True, context)
        except ResourceExhausted as refused:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused.message)

    def cancelled(self, context: Context, started: float, answered: bool) -> None:
        if answered or time.perf_counter() - started >= PREMATURE:
            self.answered.add(context.peer())


class _Writes:
    """A call's context as its behaviour sees it, noting whether it wrote a response."""

    def __init__(self, context: Context) -> None:
        self._context = context
        self.answered = False

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self.answered = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _WithinBudget(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(self, handlers: list[grpc.GenericRpcHandler], admission: _Admission) -> None:  # type: ignore[type-arg]
        self._handlers = handlers
        self._admission = admission
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        """Each method's handler, wrapped once (only the servicer's own methods are kept)."""

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = str(handler_call_details.method)
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            found = next((h for h in (g.service(handler_call_details) for g in self._handlers) if h is not None), None)
            if found is None:
                return None
            wrapped = self._wrapped[method] = _wrap(found, self._admission)
        return wrapped


def _wrap(handler: Any, admission: _Admission) -> Any:
    """``handler`` (grpc's ``RpcMethodHandler``, a named tuple) with its behaviour admitted first."""
    name = ("stream_" if handler.request_streaming else "unary_") + ("stream" if handler.response_streaming else "unary")
    behaviour = getattr(handler, name)
    if inspect.isasyncgenfunction(behaviour):

        async def yielding(request: Any, context: Context) -> AsyncIterator[Any]:
            await admission.admit(context)
            started, answered = time.perf_counter(), False
            try:
                async for response in behaviour(request, context):
                    yield response
                    answered = True
            except asyncio.CancelledError:
                admission.cancelled(context, started, answered)
                raise

        return handler._replace(**{name: yielding})

    async def answering(request: Any, context: Context) -> Any:
        await admission.admit(context)
        started, writes = time.perf_counter(), _Writes(context)
        try:
            return await behaviour(request, writes)
        except asyncio.CancelledError:
            admission.cancelled(context, started, writes.answered)
            raise

    return handler._replace(**{name: answering})


class _Details(NamedTuple):
    """A ``grpc.HandlerCallDetails`` (for the example above)."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()
