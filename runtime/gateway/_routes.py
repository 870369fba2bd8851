"""The route manager's table: one :class:`Route` per gRPC method path, rebuilt on store changes.

Everything a call needs that does not depend on the call is computed here, once per change of
the store: version catalogs, policies, parsed rate limits, the served versions of healthy
workers. The call path then reads plain attributes and dicts and never touches the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from grpc_status import rpc_status

from runtime.client import (
    HANDLER_ATTRIBUTE,
    REQUEST_ID_ATTRIBUTE,
    VERSION_ATTRIBUTE,
    LocalAbort,
    ModuleClient,
    ServerTracer,
)
from runtime.deadline import Deadline
from runtime.errors import InternalError, ModrpcError, Unavailable
from runtime.gateway._auth import Authenticator
from runtime.gateway._metadata import peer_ip
from runtime.gateway._metadata import request_id as caller_or_new_request_id
from runtime.gateway._roles import check_roles
from runtime.gateway._usage import UsageReporter
from runtime.identity import PRINCIPAL_HEADER, Principal, principal_header
from runtime.observability import STEP_EVENT, RedMetrics, request_id_var
from runtime.ratelimit import RateLimit, RateLimiter, check_rate
from runtime.status import REQUEST_ID_KEY, rpc_status_of, with_request_id
from runtime.versions import (
    TransformStep,
    VersionCatalog,
    is_retired,
    retired_error,
    run_chain,
    state_of,
)
from runtime.wire import method_path, request_message, response_message

__all__ = ["Credentials", "ModuleRoutes", "Route", "RouteTable", "Usage", "build_table"]

log = logging.getLogger("modrpc.gateway")

WORKER_STALE_SECONDS = 10.0
"""A worker whose last heartbeat is older than this gets no new traffic."""

VERIFIED_TOKENS = 4096
"""Bearer tokens whose verification is remembered (per gateway); the oldest go first beyond it."""

Plan = tuple[str, tuple[TransformStep, ...]]
"""Where a call at some version goes: the served version, and the steps that transform it."""


def instances_key(module: str, version: str) -> str:
    """The channel pool's key for the workers of ``module`` that serve ``version``.

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


class Credentials:
    """The ingress's authentication, with each verified bearer token remembered while it is valid.

    Clients send the same token on every call until it expires, and checking its signature and
    claims again each time is most of what authentication costs. A token string is verified
    once; after that, the same string maps to the same principal for as long as the token's own
    time window (``nbf``/``iat`` to ``exp``) holds on ``clock``. Outside that window, or for any
    other kind of credential, :class:`Authenticator` decides afresh, so every refusal (expired,
    not yet valid, bad signature...) still comes from it, with its message.

    The principal's forwarded form (the ``x-modrpc-principal`` header) is kept with it, so a
    cached call builds no strings either.
    """

    __slots__ = ("_auth", "_clock", "_size", "_tokens")

    def __init__(self, auth: Authenticator, *, size: int = VERIFIED_TOKENS, clock: Callable[[], float] = time.time) -> None:
        self._auth = auth
        self._size = size
        self._clock = clock
        # authorization header -> (principal, forwarded header, valid from, valid until)
        self._tokens: dict[str, tuple[Principal, str, float, float]] = {}

    def authenticate(self, headers: Mapping[str, str], *, public: bool) -> tuple[Principal, str]:
        """The caller's principal and its forwarded header; raises what the authenticator raises."""
        authorization = headers.get("authorization")
        if authorization is not None:
            known = self._tokens.get(authorization)
            if known is not None and known[2] <= self._clock() < known[3]:
                return known[0], known[1]
        principal = self._auth.authenticate(headers, public=public)
        forwarded = principal_header(principal)
        if authorization is not None and principal.method == "jwt":
            self._remember(authorization, principal, forwarded)
        return principal, forwarded

    def _remember(self, authorization: str, principal: Principal, forwarded: str) -> None:
        window = [principal.claims.get(claim, 0) for claim in ("nbf", "iat", "exp")]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in window):
            return  # the authenticator accepted it; without a plain time window it is not cached
        not_before, issued, expires = (float(v) for v in window)
        if len(self._tokens) >= self._size:
            del self._tokens[next(iter(self._tokens))]
        self._tokens[authorization] = (principal, forwarded, max(not_before, issued), expires)


class Route:
    """One method path. ``__call__`` is the gRPC handler: bytes in, bytes out."""

    __slots__ = (
        "_plans", "handler_id", "hop_timeout", "idempotent", "limiter", "method", "module", "path",
        "public", "rate_limit", "request_message", "response_message", "roles", "routes",
        "services", "timeout", "usage",
    )  # fmt: skip

    def __init__(
        self,
        *,
        module: ModuleRoutes,
        method: str,
        policy: Mapping[str, Any],
        services: _Services,
    ) -> None:
        self.routes = module
        self.module = module.name
        self.method = method
        self.path = method_path(module.name, method)
        self.handler_id = f"{module.name}.{method}"
        self.public = bool(policy.get("public", False))
        self.roles = tuple(policy.get("roles", ()))
        limit = policy.get("rate_limit")
        self.rate_limit = RateLimit.parse(limit) if limit else None
        self.timeout = float(policy.get("timeout", 5.0))
        self.idempotent = bool(policy.get("idempotent", False))
        self.request_message = request_message(method)
        self.response_message = response_message(method)
        self.services = services
        self.limiter = services.limiter
        self.usage = services.usage
        self.hop_timeout = services.hop_timeout
        self._plans: dict[str, Plan | None] = {}

    def plan(self, version: str) -> Plan | None:
        """Where a call at ``version`` goes and the steps it needs; None when nothing serves it.

        No steps means the bytes pass through untouched. That holds for a served version, and
        also for a chain of compatible (non-breaking) versions none of which has a transformer
        for this method: field numbers are never reused, so the old request bytes are valid new
        request bytes and the new response bytes read fine as the old response. Computed once
        per version; the route (and so the cache) is rebuilt whenever the table is.
        """
        if version in self._plans:
            return self._plans[version]
        catalog = self.routes.catalog
        found = catalog.route(version, self.routes.served)
        plan: Plan | None = None
        if found is not None:
            target, steps = found
            needed = any(
                catalog.by_id[step.to_version].breaking or self.method in step.forward or self.method in step.backward
                for step in steps
            )
            plan = (target, tuple(steps) if needed else ())
        self._plans[version] = plan
        return plan

    async def __call__(self, payload: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        # Binary (-bin) values are not needed for routing; keeping text only keeps types simple.
        headers = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        request_id = caller_or_new_request_id(headers)
        # Returned in the trailers, with the status, on success and failure alike: initial
        # metadata sent on its own costs grpc.aio a batch of its own on every call.
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        # The server span continues the caller's trace and carries the ids the caller may not
        # have sent: the request id in force, this handler, and (below) the resolved version.
        services = self.services
        span, span_token = services.tracing.start(
            self.path, headers, {REQUEST_ID_ATTRIBUTE: request_id, HANDLER_ATTRIBUTE: self.handler_id}
        )
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        code: grpc.StatusCode | None = grpc.StatusCode.OK
        details: str | None = None
        version = "unresolved"
        try:
            principal, principal_value = services.credentials.authenticate(headers, public=self.public)
            traced = span.is_recording()  # each step then ends with an event: the playground's timeline
            if traced:
                span.add_event(STEP_EVENT, {"step": "authenticate", "value": principal.subject})
            version = self.routes.catalog.resolve(headers.get("x-api-version"))
            span.set_attribute(VERSION_ATTRIBUTE, version)
            if traced:
                span.add_event(STEP_EVENT, {"step": "resolve version", "value": version})
            if version in self.routes.retired:
                raise retired_error(self.module, version)
            return await self._call(payload, context, headers, request_id, principal, principal_value, version, span if traced else None)
        except asyncio.CancelledError:
            code = None
            raise
        except Exception as exc:
            if not isinstance(exc, ModrpcError) or isinstance(exc, InternalError):
                log.error("call %s %s failed: %s", request_id, self.path, exc, exc_info=exc)
            relayed = _relayed_status(exc)
            status = with_request_id(relayed, request_id) if relayed is not None else rpc_status_of(exc, request_id)
            code, details = status.code, status.details
            await context.abort_with_status(status)  # type: ignore[attr-defined]  # missing from grpc-stubs
            raise
        finally:
            request_id_var.reset(token)
            ServerTracer.end(span, span_token, code, details)
            red = services.red
            if red is not None:
                red.observe(self.path, version, "CANCELLED" if code is None else code.name, time.perf_counter() - started)

    async def _call(
        self,
        payload: bytes,
        context: grpc.aio.ServicerContext[bytes, bytes],
        headers: dict[str, str],
        request_id: str,
        principal: Principal,
        principal_value: str,
        version: str,
        span: Any = None,
    ) -> bytes:
        catalog = self.routes.catalog
        if self.roles:
            check_roles(principal, self.roles)
        if self.rate_limit is not None:
            await check_rate(self.limiter, f"{self.path}|{principal.subject}", self.rate_limit)
        if span is not None:
            span.add_event(STEP_EVENT, {"step": "roles and rate limit"})
        plan = self.plan(version)
        if plan is None:
            raise Unavailable(
                f"no healthy worker serves {self.module} {version}, and no transformer chain leads "
                f"from it to a served version ({', '.join(self.routes.served) or 'none running'})"
            )
        target, steps = plan
        if span is not None:
            hops = f" via {len(steps)} transformer hop{'s' if len(steps) != 1 else ''}" if steps else ""
            span.add_event(STEP_EVENT, {"step": "route", "value": f"{target}{hops}"})
        instances = instances_key(self.module, target)
        self.usage.count(self.module, version)
        if version in self.routes.cold and self.services.reporter is not None:
            self.services.reporter.promote_soon(self.module, version)
        remaining = context.time_remaining()
        deadline = Deadline.earliest(Deadline.from_timeout(remaining), Deadline.from_timeout(self.timeout))
        out_metadata = [
            (REQUEST_ID_KEY, request_id),
            ("x-api-version", target),
            (PRINCIPAL_HEADER, principal_value),
        ]
        flags = headers.get("x-flags")
        if flags:
            out_metadata.append(("x-flags", flags))
        # Metadata normalisation: grpc hands keys over lower-cased, and only the keys named here
        # travel on, so hop-by-hop headers never reach a worker; x-forwarded-for gains this peer.
        peer = peer_ip(context.peer())
        forwarded_for = headers.get("x-forwarded-for")
        if peer is not None:
            forwarded_for = f"{forwarded_for}, {peer}" if forwarded_for else peer
        if forwarded_for:
            out_metadata.append(("x-forwarded-for", forwarded_for))
        client: ModuleClient = self.services.client
        if not steps:  # the hot path: the bytes go through untouched
            response, _ = await client.call_raw(
                instances, self.path, payload, metadata=out_metadata, deadline=deadline, idempotent=self.idempotent
            )
            return response
        old = catalog.wire(version)
        new = catalog.wire(target)
        left = deadline.remaining if deadline is not None else None
        transformed = await run_chain(
            steps, self.method, old.decode(self.request_message, payload),
            direction="forward", hop_timeout=self.hop_timeout, deadline_remaining=left,
        )  # fmt: skip
        try:
            forwarded = new.encode(self.request_message, transformed)
        except TypeError as exc:
            raise InternalError(f"transformed {self.path} request does not fit {target}: {exc}") from exc
        response_bytes, _ = await client.call_raw(
            instances, self.path, forwarded, metadata=out_metadata, deadline=deadline, idempotent=self.idempotent
        )
        answer = await run_chain(
            steps, self.method, new.decode(self.response_message, response_bytes),
            direction="backward", hop_timeout=self.hop_timeout, deadline_remaining=left,
        )  # fmt: skip
        try:
            return old.encode(self.response_message, answer)
        except TypeError as exc:
            raise InternalError(f"transformed {self.path} response does not fit {version}: {exc}") from exc


def _relayed_status(exc: BaseException) -> grpc.Status | None:
    """A worker's own status with its ``google.rpc`` details (BadRequest, RetryInfo), if any.

    The worker already chose the code, the safe message and the details; the gateway passes
    them on unchanged rather than rebuilding a poorer copy. A worker in this process (the
    embedded mode) hands its status over as a :class:`~runtime.client.LocalAbort`.
    """
    cause = exc.__cause__
    if isinstance(cause, grpc.aio.AioRpcError):
        status = rpc_status.from_call(cause)  # type: ignore[arg-type]
    elif isinstance(cause, LocalAbort):
        status = _local_status(cause)
    else:
        return None
    if status is None or not status.details:
        return None
    return rpc_status.to_status(status)


def _local_status(abort: LocalAbort) -> status_pb2.Status | None:
    for key, value in abort.trailing_metadata:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


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
    credentials: Credentials = field(init=False)
    """``auth`` with verified tokens remembered; what routes authenticate with."""

    def __post_init__(self) -> None:
        self.credentials = Credentials(self.auth)


@dataclass(frozen=True)
class RouteTable:
    """Every route by method path, plus each module's routes; replaced whole on every change."""

    routes: Mapping[str, Route]
    modules: Mapping[str, ModuleRoutes]
    handlers: Mapping[str, grpc.RpcMethodHandler[bytes, bytes]]
    """The prebuilt gRPC handler of each route, so lookups allocate nothing per call."""


async def build_table(store: Any, services: _Services, *, now: float | None = None) -> RouteTable:
    """Read the store once and build the whole table."""
    now = time.time() if now is None else now
    routes: dict[str, Route] = {}
    modules: dict[str, ModuleRoutes] = {}
    workers = await store.list_workers()
    pool = services.client.pool
    keys: set[str] = set()
    for module in await store.modules():
        records = await store.list_versions(module)
        if not records:
            continue
        labels = await store.labels(module)
        catalog = VersionCatalog.from_records(module, records, labels)
        alive = [
            w for w in workers
            if w.module == module and w.healthy and now - w.last_seen <= WORKER_STALE_SECONDS
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
        manifest = catalog.latest.manifest
        policies = {h["method"]: h.get("policy", {}) for h in manifest.get("handlers", ())}
        methods = {m.name for v in catalog.versions for m in v.schema.methods}
        for method in sorted(methods):
            route = Route(module=entry, method=method, policy=policies.get(method, {}), services=services)
            routes[route.path] = route
    for key in pool.modules():
        if key not in keys:  # no healthy worker serves that version any more
            pool.update(key, [])
    # grpc.aio recognises coroutine functions, not objects with an async __call__: pass the method.
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        path: grpc.unary_unary_rpc_method_handler(route.__call__) for path, route in routes.items()
    }
    return RouteTable(routes, modules, handlers)
