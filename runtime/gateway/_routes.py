"""The route manager's table: one :class:`Route` per gRPC method path, rebuilt on store changes.

Everything a call needs that does not depend on the call is computed here, once per change of
the store: version catalogs, policies, parsed rate limits, the served versions of healthy
workers. The call path then reads plain attributes and dicts and never touches the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from runtime.client import ModuleClient
from runtime.errors import (
    DeadlineExceeded,
    InternalError,
    InvalidArgument,
    ModrpcError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from runtime.gateway._auth import Authenticator
from runtime.gateway._ingress import (
    ClientCalls,
    ClientCertificates,
    Credentials,
    Forward,
    GatewayCall,
    Step,
    build_chain,
    request_id,
)
from runtime.gateway._public import Admission
from runtime.gateway._usage import UsageReporter
from runtime.limits import PREMATURE, AnsweredStreams
from runtime.manifest import MethodPolicy
from runtime.observability import (
    HANDLER_ATTRIBUTE,
    STEP_EVENT,
    RedMetrics,
    ServerTracer,
    request_id_var,
)
from runtime.ratelimit import RateLimit, RateLimiter
from runtime.status import rpc_status_of
from runtime.transport import until_half_closed
from runtime.versions import Conversion, VersionCatalog, is_removed, is_retired, plan, state_of
from runtime.wire import method_path

if TYPE_CHECKING:
    from runtime.store import ManifestStore

__all__ = ["Arrivals", "ModuleRoutes", "Route", "RouteTable", "TableFeed", "Usage", "build_table"]

log = logging.getLogger("modrpc.gateway")

WORKER_STALE_SECONDS = 10.0
"""A worker whose last heartbeat is older than this gets no new traffic (counting only time the
store could be reached: see :func:`build_table`)."""

Plan = tuple[str, Conversion | None]
"""Where a call at some version goes: the served version, and the conversion it needs (None:
the bytes pass through)."""


def instances_key(module: str, version: str) -> str:
    """The instance pool's key for the workers of ``module`` that serve ``version``.

    Workers of one module may serve different versions side by side (a breaking version with
    no transformers), and a worker refuses a version it does not serve, so the gateway keeps
    one set of instances per served version rather than one per module.
    """
    return f"{module}@{version}"


@dataclass
class Usage:
    """Requests counted per (module, version): what the version lifecycle classifies by."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_seen: dict[tuple[str, str], float] = field(default_factory=dict)

    def count(self, module: str, version: str) -> None:
        key = (module, version)
        self.counts[key] += 1
        self.last_seen[key] = time.monotonic()


@dataclass(frozen=True)
class ModuleRoutes:
    """One module as the gateway sees it."""

    name: str
    catalog: VersionCatalog
    served: tuple[str, ...]
    """Versions some healthy worker serves natively, newest first."""
    retired: frozenset[str] = frozenset()
    """Versions the lifecycle retired: calls at them are NOT_FOUND, naming them as retired."""
    cold: frozenset[str] = frozenset()
    """Versions with no recent traffic: a call at one asks for its promotion to warm."""


class Route:
    """One method path: its policy, its chain of ingress steps, built once, and the gRPC handler.

    :meth:`unary` is the handler (bytes in, bytes out): it frames the chain with the call's span,
    metrics and final status, and runs the steps (:mod:`runtime.gateway._ingress`) in order.
    """

    __slots__ = (
        "_forward", "_plans", "_steps", "handler_id", "method", "module", "path", "policy", "routes",
        "services", "streaming",
    )  # fmt: skip

    def __init__(
        self, *, module: ModuleRoutes, method: str, policy: MethodPolicy, services: _Services, streaming: bool = False
    ) -> None:
        self.streaming = streaming
        """The method streams (either way): :meth:`stream` serves it instead of :meth:`unary`."""
        self.routes = module
        self.module = module.name
        self.method = method
        self.path = method_path(module.name, method)
        self.handler_id = f"{module.name}.{method}"
        self.policy = policy
        self.services = services
        self._plans: dict[str, Plan | None] = {}
        self._steps: tuple[Step, ...]
        self._forward: Forward
        self._steps, self._forward = build_chain(self)

    @property
    def steps(self) -> tuple[str, ...]:
        """The names of this route's steps, in the order a call runs them."""
        names = [getattr(step, "__name__", None) or type(step).__name__ for step in self._steps]
        return ("request_id", *names, type(self._forward).__name__)

    def plan(self, version: str) -> Plan | None:
        """Where a call at ``version`` goes and how; None when nothing serves it.

        Computed once per version; the route (and so the cache) is rebuilt whenever the table is.
        """
        if version in self._plans:
            return self._plans[version]
        found = plan(self.routes.catalog, self.method, version, self.routes.served, hop_timeout=self.services.hop_timeout)
        self._plans[version] = found
        return found

    async def stream(self, requests: AsyncIterable[bytes], context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        """The gRPC handler of a streaming method (any shape: the wire is the same).

        The chain runs once, as the stream opens; then :meth:`Forward.stream` carries the
        messages, and the call's span, metrics and status cover the whole stream.
        """
        services = self.services
        metadata = context.invocation_metadata() or ()
        overfull = len(metadata) * _HEADER_OVERHEAD > services.max_metadata_bytes
        headers = {} if overfull else {k: v for k, v in metadata if isinstance(v, str)}
        span, span_token = services.tracing.start(self.path, headers, {HANDLER_ATTRIBUTE: self.handler_id})
        call = GatewayCall(b"", headers, context, span)
        started = time.perf_counter()
        observed = False
        code: grpc.StatusCode | None = grpc.StatusCode.OK
        details: str | None = None
        request_id(call)
        token = request_id_var.set(call.request_id)
        try:
            if overfull:
                raise _too_many_headers(len(metadata), services.max_metadata_bytes)
            for step in self._steps:
                pending = step(call)
                if pending is not None:
                    await pending
            await self._forward.stream(call, until_half_closed(requests))
        except asyncio.CancelledError:
            code = None
            if call.answered or time.perf_counter() - started >= PREMATURE:
                services.answered.add(context.peer())  # not a rapid reset: the guard takes it back out
            raise
        except Exception as exc:
            status = await self._status_of(call, exc)
            code, details = status.code, status.details
            # Counted before the caller hears it: abort sends the status at once.
            self._observe(call, code, started)
            observed = True
            await context.abort_with_status(status)  # type: ignore[attr-defined]  # missing from grpc-stubs
            raise
        finally:
            request_id_var.reset(token)
            ServerTracer.end(span, span_token, code, details)
            if not observed:
                self._observe(call, code, started)

    async def _request(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        """The call's one request message, once it has arrived whole (grpc bounds its size),
        within the method's timeout (grpc itself ends the call at the caller's deadline)."""
        message = await self.services.arrivals.read(context, self.policy.timeout)
        if not isinstance(message, bytes):  # grpc.aio.EOF: the caller half-closed without one
            raise InvalidArgument(f"the call to {self.path} ended without a whole request message")
        return message

    def _observe(self, call: GatewayCall, code: grpc.StatusCode | None, started: float) -> None:
        """The call's RED metrics: its code (CANCELLED when the caller went away) and duration."""
        red = self.services.red
        if red is not None:
            red.observe(self.path, call.version, "CANCELLED" if code is None else code.name, time.perf_counter() - started)

    async def _status_of(self, call: GatewayCall, exc: Exception) -> grpc.Status:
        """The status a failed call ends with; a worker's own (with its google.rpc details) goes
        back as it came, and anything unexpected is logged.

        A call refused for its credentials reached no module, as an unknown method's does: it
        counts with those (``unrouted_rate_limit``), so a loop of them is refused, then cut
        off, as theirs is."""
        if isinstance(exc, Unauthenticated):
            exc = await self.services.unrouted.count(call.context) or exc
        if not isinstance(exc, ModrpcError) or isinstance(exc, InternalError):
            log.error("call %s %s failed: %s", call.request_id, self.path, exc, exc_info=exc)
        return rpc_status_of(exc, call.request_id, relay=True)

    async def unary(self, requests: AsyncIterable[bytes], context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        """The gRPC handler of a unary method.

        grpc.aio hands a unary handler its call only once the whole request has arrived, and
        counts the call against ``max_concurrent_calls`` meanwhile: requests sent a byte at a
        time, without credentials, held every call slot until their connection's age. So unary
        methods are served as stream-unary ones: the chain (authentication, the client's budget,
        roles, rate limit) runs as the headers arrive and may refuse the call before its body is
        read; then the one request message must arrive within the method's timeout.
        """
        services = self.services
        metadata = context.invocation_metadata() or ()
        overfull = len(metadata) * _HEADER_OVERHEAD > services.max_metadata_bytes
        headers = {} if overfull else {k: v for k, v in metadata if isinstance(v, str)}
        # The server span continues the caller's trace; the steps tag it with the request id in
        # force and the resolved version.
        span, span_token = services.tracing.start(self.path, headers, {HANDLER_ATTRIBUTE: self.handler_id})
        call = GatewayCall(b"", headers, context, span)
        started = time.perf_counter()
        observed = False
        code: grpc.StatusCode | None = grpc.StatusCode.OK
        details: str | None = None
        request_id(call)  # the first step, ahead of the rest: every answer carries the id
        token = request_id_var.set(call.request_id)
        try:
            if overfull:
                raise _too_many_headers(len(metadata), services.max_metadata_bytes)
            if services.tables.closing:  # refused, not run: the caller may take it to another gateway
                raise Unavailable("the gateway is shutting down; call another one")
            traced = span.is_recording()  # then each step ends with an event: the playground's timeline
            for step in self._steps:
                pending = step(call)
                if pending is not None:
                    await pending
                if traced:
                    span.add_event(STEP_EVENT, _step_event(step, call))
            reading = time.perf_counter()
            call.payload = await self._request(context)
            call.arrived_after = time.perf_counter() - reading
            return await self._forward(call)
        except asyncio.CancelledError:
            code = None
            if call.answered or time.perf_counter() - started >= PREMATURE:
                services.answered.add(context.peer())  # not a rapid reset: the guard takes it back out
            raise
        except Exception as exc:
            status = await self._status_of(call, exc)
            code, details = status.code, status.details
            # Counted before the caller hears it: abort sends the status at once.
            self._observe(call, code, started)
            observed = True
            await context.abort_with_status(status)  # type: ignore[attr-defined]  # missing from grpc-stubs
            raise
        finally:
            request_id_var.reset(token)
            ServerTracer.end(span, span_token, code, details)
            if not observed:
                self._observe(call, code, started)


class TableFeed:
    """The gateway's current route table, and a wait for the next one.

    A call to a module that no healthy worker serves right now (its workers are restarting)
    waits here, within its deadline, for a table in which one does, instead of failing at once.
    """

    def __init__(self) -> None:
        self.current: RouteTable | None = None
        self._next: asyncio.Future[None] | None = None
        self.closing = False
        """Set when the gateway stops: waiting calls give up with UNAVAILABLE at once."""

    def publish(self, table: RouteTable) -> None:
        self.current = table
        self._wake()

    def close(self) -> None:
        self.closing = True
        self._wake()

    def _wake(self) -> None:
        waiting, self._next = self._next, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def wait(self, seconds: float) -> None:
        """Until the next table (or :meth:`close`), at most ``seconds``."""
        if self.closing or seconds <= 0:
            return
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await asyncio.shield(self._next)


def _step_event(step: Step, call: GatewayCall) -> dict[str, str]:
    """The attributes of the event a traced step ends with: its name and what it decided."""
    name = getattr(step, "__name__", None) or type(step).__name__
    decided = {
        "Authenticate": call.principal.subject,
        "ClientCalls": call.client,
        "ResolveVersion": call.version,
        "PickInstance": call.target + (" through a conversion" if call.conversion is not None else ""),
    }.get(name)
    return {"step": name} if decided is None else {"step": name, "value": decided}


class Arrivals:
    """Calls whose request message is still arriving, each ended DEADLINE_EXCEEDED once its
    method's timeout has passed.

    One sweep every ``interval`` (:meth:`run`) instead of a timer per call: an
    ``asyncio.timeout`` around each read cost a unary call 8% more CPU in grpc.aio (40,000 more
    instructions, counted by callgrind), where registering the call in a dict costs 0.3%. A
    timeout is therefore kept to within ``interval``.
    """

    __slots__ = ("_expired", "_waiting", "interval")

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._waiting: dict[asyncio.Task[object], float] = {}
        """Each reading call's task, and when its request must have arrived."""
        self._expired: set[asyncio.Task[object]] = set()

    async def read(self, context: grpc.aio.ServicerContext[bytes, bytes], timeout: float) -> object:
        """``context.read()``, ended with :class:`DeadlineExceeded` past ``timeout`` seconds."""
        task = asyncio.current_task()
        if task is None:  # not run by grpc.aio: nothing to cancel it with
            return await context.read()
        self._waiting[task] = time.monotonic() + timeout
        try:
            return await context.read()
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # the caller went away
            task.uncancel()
            raise DeadlineExceeded(
                f"the request message did not arrive within {timeout:g} s, the method's timeout"
            ) from None
        finally:
            del self._waiting[task]
            self._expired.discard(task)

    def sweep(self, now: float) -> int:
        """End the reads past their time; how many."""
        ended = 0
        for task, due in list(self._waiting.items()):
            if due <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
                ended += 1
        return ended

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._waiting:
                self.sweep(time.monotonic())


_HEADER_OVERHEAD = 32
"""What HTTP/2 counts for each header beyond its name and value (RFC 9113, SETTINGS_MAX_HEADER_LIST_SIZE)."""


def _too_many_headers(count: int, limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"the call sent {count} headers: more than fit in the gateway's {limit} bytes of metadata "
        "(limits.max_metadata_bytes)"
    )


@dataclass
class _Services:
    """What every route shares; one per gateway."""

    auth: Authenticator
    limiter: RateLimiter
    client: ModuleClient
    usage: Usage
    hop_timeout: float = 0.25
    red: RedMetrics | None = None
    reporter: UsageReporter | None = None
    """Flushes usage to the store and promotes cold versions (None: usage stays in memory)."""
    tracing: ServerTracer = field(default_factory=ServerTracer)
    """Opens each route's server span (the gateway's server has no tracing interceptor)."""
    tables: TableFeed = field(default_factory=TableFeed)
    """The current route table, which calls waiting for a worker wait on."""
    client_certs: ClientCertificates | None = None
    """Principals of client certificates, at an edge that requires them (``tls.client_ca``)."""
    snapshot_roles: frozenset[str] = frozenset()
    """Roles whose callers' ``x-flags: snapshot`` travels on (``auth.snapshot_roles``)."""
    max_metadata_bytes: int = 16 * 1024
    """``limits.max_metadata_bytes``. grpc enforces it only once the client has acknowledged
    the server's settings, so a client that never does can send thousands of headers a call
    (10,000 cost the gateway 46 ms of CPU each); the routes refuse more headers than could fit
    (each counts at least 32 bytes in HTTP/2) before reading any of them."""
    max_calls_per_client: int = 64
    """``limits.max_calls_per_client``."""
    max_anonymous_calls: int = 128
    """``limits.max_anonymous_calls``."""
    unrouted_rate_limit: str = "100/second"
    """``limits.unrouted_rate_limit``."""
    credentials: Credentials = field(init=False)
    """``auth`` with verified tokens remembered; what routes authenticate with."""
    client_calls: ClientCalls = field(init=False)
    """The calls each client has running: a step of every route, released as each call ends."""
    unrouted: Admission = field(init=False)
    """What calls that never reach a module count against, per address: grpc's services,
    unknown methods, and route calls refused for their credentials."""
    answered: AnsweredStreams = field(default_factory=AnsweredStreams)
    """Calls their callers cancelled late, or after answers: not resets, for the reset guard."""
    arrivals: Arrivals = field(default_factory=Arrivals)
    """Unary calls whose request is still arriving; the gateway runs its sweep."""

    def __post_init__(self) -> None:
        self.credentials = Credentials(self.auth)
        self.client_calls = ClientCalls(self.max_calls_per_client, self.max_anonymous_calls)
        self.unrouted = Admission(self.client_calls, self.answered, RateLimit.parse(self.unrouted_rate_limit))


@dataclass(frozen=True)
class RouteTable:
    """Every route by method path, plus each module's routes; replaced whole on every change."""

    routes: Mapping[str, Route]
    modules: Mapping[str, ModuleRoutes]
    handlers: Mapping[str, grpc.RpcMethodHandler[bytes, bytes]]
    """The prebuilt gRPC handler of each route, so lookups allocate nothing per call."""


async def build_table(
    store: ManifestStore, services: _Services, *, now: float | None = None, store_back_at: float | None = None
) -> RouteTable:
    """Read the store once and build the whole table.

    ``store_back_at`` is when the store came back after an outage (unix seconds): no worker could
    heartbeat while it was down, so a heartbeat counts as no older than that. A worker is stale
    only after :data:`WORKER_STALE_SECONDS` during which the store was there and it said nothing.
    """
    now = time.time() if now is None else now
    since = store_back_at or 0.0
    routes: dict[str, Route] = {}
    modules: dict[str, ModuleRoutes] = {}
    workers = await store.list_workers()
    pool = services.client.pool
    keys: set[str] = set()
    for module in await store.modules():
        records = await store.list_versions(module)
        if not records:
            continue
        if all(is_removed(r.metadata) for r in records) and not any(w.module == module for w in workers):
            continue  # removed from its project and no worker left: no longer served or listed
        labels = await store.labels(module)
        catalog = VersionCatalog.from_records(module, records, labels)
        alive = [
            w for w in workers
            if w.module == module and w.healthy and now - max(w.last_seen, since) <= WORKER_STALE_SECONDS
        ]  # fmt: skip
        served = sorted({v for w in alive for v in w.versions if v in catalog.by_id},
                        key=lambda v: catalog.by_id[v].created_at, reverse=True)  # fmt: skip
        for version in served:
            key = instances_key(module, version)
            keys.add(key)
            pool.update(key, sorted({w.address for w in alive if version in w.versions}))
        entry = ModuleRoutes(
            module,
            catalog,
            tuple(served),
            retired=frozenset(r.id for r in records if is_retired(r.metadata)),
            cold=frozenset(r.id for r in records if state_of(r.metadata) == "cold"),
        )
        modules[module] = entry
        # Each method's policy as the newest manifest that lists it declares it: a method the
        # latest version removed keeps the policy it had for the callers still pinned to it.
        policies: dict[str, Mapping[str, object]] = {}
        for info in reversed(catalog.versions):
            for h in info.manifest.get("handlers", ()):
                policies.setdefault(h["method"], h.get("policy", {}))
        methods = {m.name for v in catalog.versions for m in v.schema.methods}
        # A method's shape as its newest version has it (a change of shape is a breaking version).
        streaming = {
            m.name: m.client_streaming or m.server_streaming for v in catalog.versions for m in v.schema.methods
        }
        for method in sorted(methods):
            policy = MethodPolicy.model_validate(policies.get(method, {}))
            route = Route(module=entry, method=method, policy=policy, services=services, streaming=streaming[method])
            routes[route.path] = route
    for key in pool.keys():
        if key not in keys:  # no healthy worker serves that version any more
            pool.update(key, [])
    # grpc.aio recognises coroutine functions, not objects with an async __call__: pass the method.
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        path: (
            grpc.stream_stream_rpc_method_handler(route.stream)
            if route.streaming
            else grpc.stream_unary_rpc_method_handler(route.unary)
        )
        for path, route in routes.items()
    }
    return RouteTable(routes, modules, handlers)
