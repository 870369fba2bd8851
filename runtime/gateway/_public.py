"""grpc's own services at the gateway (health, reflection), within the anonymous callers' budget.

Health checks and reflection need no credentials, and grpc serves them from its own servicers,
outside the routes' chain. Left so, one address could open hundreds of ``Health/Watch`` or
reflection streams and hold every slot of ``max_concurrent_calls``, callers with credentials
included. :func:`within_budget` puts each of their calls through the same
:class:`~runtime.gateway._ingress.ClientCalls` as a public route's anonymous call: at most
``max_calls_per_client`` from one address, ``max_anonymous_calls`` from all together, and at
most ``unrouted_rate_limit`` calls from one address, counted in this process (a stream counts
when it opens, and again for each request after its first). As for a route, a call its caller
cancels once answered (a watch it is done with), or after a second, is told to the reset guard
as no rapid reset (:class:`~runtime.limits.AnsweredStreams`).

    >>> from grpc_health.v1 import health_pb2_grpc
    >>> from runtime.health import HealthService
    >>> from runtime.gateway._ingress import ClientCalls
    >>> admission = Admission(ClientCalls(64, 128), AnsweredStreams(), RateLimit.parse("50/second"))
    >>> handler = within_budget(health_pb2_grpc.add_HealthServicer_to_server, HealthService(), admission)
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
from runtime.gateway._ingress import ClientCalls, peer_ip
from runtime.limits import PREMATURE, AddressBans, AnsweredStreams
from runtime.ratelimit import RateLimit, open_ratelimiter
from runtime.status import rpc_status_of

__all__ = ["Admission", "rate_key", "within_budget"]

_MAX_ADDRESSES = 10_000
"""Addresses whose rate is remembered at once; the least recently seen is forgotten first."""

Context = grpc.aio.ServicerContext[Any, Any]


def within_budget(
    register: Callable[[Any, Any], None], servicer: object, admission: Admission
) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
    """The generic handler that serves ``servicer`` as ``register`` (a generated
    ``add_*Servicer_to_server``) would, each call let in by ``admission`` first."""
    captured = _Captured()
    register(servicer, captured)
    if not captured.handlers:
        raise TypeError(f"{register.__name__} registered no generic handler")
    return _WithinBudget(captured.handlers, admission)


class _Captured:
    """Stands in for a server to a generated ``add_*Servicer_to_server``: keeps its handlers."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []  # type: ignore[type-arg]

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:  # type: ignore[type-arg]
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: object) -> None:
        """The same methods again, for grpc core to match: served through the generic handler."""


def rate_key(peer: str) -> str:
    """Whom a call counts against for ``unrouted_rate_limit``: what a ban of its address would
    refuse (the IPv4 address, or the IPv6 /64: a host is usually given a whole /64).

        >>> rate_key("ipv4:10.1.2.3:5000"), rate_key("ipv6:[2001:db8::7]:5000")
        ('address 10.1.2.3', 'address 2001:db8::/64')
    """
    ip = peer_ip(peer)
    return f"address {peer if ip is None else AddressBans.name(ip)}"


class Admission:
    """Each call's admission (the rate of its address, then the anonymous budget), and what its
    cancellation tells the reset guard. One is shared, at a gateway, by everything a caller may
    reach without reaching a module: grpc's services, the unknown methods' answer, and route
    calls refused for their credentials.

    The rate is counted in this process, whatever ``ratelimit_url`` says: it guards this
    gateway's own time, and a health check must not fail because a rate-limit backend is down.
    A refused call costs the gateway about what an answered one does, so an address refused
    more often than ``rate`` allows calls (it ignores RetryInfo) is told to ``on_flood``
    (the reset guard bans it and closes its connections).
    """

    def __init__(
        self,
        calls: ClientCalls,
        answered: AnsweredStreams,
        rate: RateLimit,
        on_flood: Callable[[str, str], None] | None = None,
    ) -> None:
        self.calls = calls
        self.answered = answered
        self.rate = rate
        self.on_flood = on_flood
        self._limiter = open_ratelimiter("memory://", max_keys=_MAX_ADDRESSES)

    async def admit(self, context: Context) -> None:
        """Let a call in: within its address's rate, then within the anonymous budget."""
        refused = await self.count(context)
        if refused is None:
            try:
                self.calls.admit(ClientCalls.address(context), True, context)
            except ResourceExhausted as exc:
                refused = exc
        if refused is not None:
            await _abort(context, refused)

    async def limit(self, context: Context) -> None:
        """Count a call against its address's rate alone (a call that ends at once, such as one
        to a method no module has), ending it RESOURCE_EXHAUSTED when over."""
        refused = await self.count(context)
        if refused is not None:
            await _abort(context, refused)

    async def count(self, context: Context) -> ResourceExhausted | None:
        """Count one more against the call's address's rate, without ending the call: the
        refusal, if it is over. For a stream's further request messages (one stream must not
        carry what the rate refuses to separate calls), and for route calls refused for their
        credentials (they never reach a module either)."""
        peer = context.peer()
        key = rate_key(peer)
        decision = await self._limiter.hit(key, self.rate)
        if decision.allowed:
            return None
        await self._refused(key, peer)
        return ResourceExhausted(
            f"{key} made more calls that reach no module (health, reflection, unknown methods, "
            f"calls without valid credentials) than {self.rate} (limits.unrouted_rate_limit); "
            f"retry after {decision.retry_after:.3f}s",
            retry_after=decision.retry_after,
        )

    async def _refused(self, key: str, peer: str) -> None:
        """Count a refusal; past as many as ``rate`` allows calls, the address is flooding."""
        if self.on_flood is None or (await self._limiter.hit(f"refused {key}", self.rate)).allowed:
            return
        ip = peer_ip(peer)
        if ip is not None:
            self.on_flood(
                ip,
                f"flood of calls that reach no module: refused more than {self.rate} and still "
                "calling (limits.unrouted_rate_limit)",
            )

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
    def __init__(self, handlers: list[grpc.GenericRpcHandler], admission: Admission) -> None:  # type: ignore[type-arg]
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


def _wrap(handler: Any, admission: Admission) -> Any:
    """``handler`` (grpc's ``RpcMethodHandler``, a named tuple) with its behaviour admitted first."""
    name = ("stream_" if handler.request_streaming else "unary_") + ("stream" if handler.response_streaming else "unary")
    behaviour = getattr(handler, name)
    if inspect.isasyncgenfunction(behaviour):

        async def yielding(request: Any, context: Context) -> AsyncIterator[Any]:
            await admission.admit(context)
            paced = _Paced(request, admission, context) if handler.request_streaming else None
            started, answered = time.perf_counter(), False
            try:
                async for response in behaviour(request if paced is None else paced, context):
                    yield response
                    answered = True
            except asyncio.CancelledError:
                admission.cancelled(context, started, answered)
                raise
            if paced is not None:
                await paced.end()

        return handler._replace(**{name: yielding})

    async def answering(request: Any, context: Context) -> Any:
        await admission.admit(context)
        paced = _Paced(request, admission, context) if handler.request_streaming else None
        started, writes = time.perf_counter(), _Writes(context)
        try:
            answer = await behaviour(request if paced is None else paced, writes)
        except asyncio.CancelledError:
            admission.cancelled(context, started, writes.answered)
            raise
        if paced is not None:
            await paced.end()
        return answer

    return handler._replace(**{name: answering})


class _Paced:
    """A stream's request messages, each after the first counted by :meth:`Admission.count` (the
    first came with the call, counted as it opened). Past the rate the messages end, and
    :meth:`end` ends the call with the refusal, once the servicer is done with them."""

    def __init__(self, requests: AsyncIterator[Any], admission: Admission, context: Context) -> None:
        self._requests = requests
        self._admission = admission
        self._context = context
        self.refused: ResourceExhausted | None = None

    async def __aiter__(self) -> AsyncIterator[Any]:
        first = True
        async for message in self._requests:
            if not first:
                self.refused = await self._admission.count(self._context)
                if self.refused is not None:
                    return
            first = False
            yield message

    async def end(self) -> None:
        if self.refused is not None:
            await _abort(self._context, self.refused)


async def _abort(context: Context, refused: ResourceExhausted) -> None:
    await context.abort_with_status(rpc_status_of(refused))  # type: ignore[attr-defined]  # missing from grpc-stubs


class _Details(NamedTuple):
    """A ``grpc.HandlerCallDetails`` (for the example above)."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()
