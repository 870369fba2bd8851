"""The gateway's ingress: one call through a chain of named steps, in the order SPEC §5 gives.

Each step is a small callable taking the one :class:`GatewayCall` and filling in what it
decides; the chain is built once per route (a route with no roles has no ``authorize``, one with
no rate limit no ``rate_limit``), so a call runs only the steps its method needs:

    request_id → authenticate → client_calls → resolve_version → authorize → rate_limit
               → pick_instance → forward

The request id comes first so that every answer, refusals included, carries it. A step that
refuses the call raises the runtime error of its status; the route ends the call with it.

A streaming call runs the same chain once, when the stream opens (one authentication, one role
check, one count against the rate limit), then :meth:`Forward.stream` carries its messages:
each converted on its own for a caller pinned to an old version, request messages counted
against the method's ``message_rate_limit`` when it has one, and each response message written
to the caller only as fast as the caller reads (grpc's flow control holds the write, which holds
the read from the worker, which holds the handler).
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from opentelemetry import trace

from runtime.client import ModuleClient, RetryPolicy
from runtime.deadline import Deadline
from runtime.errors import ModrpcError, ResourceExhausted, Unavailable
from runtime.gateway._auth import Authenticator, check_single_credentials
from runtime.gateway._flags import forwarded_flags
from runtime.identity import (
    ANONYMOUS,
    PRINCIPAL_HEADER,
    Principal,
    check_roles,
    principal_header,
    request_id_of,
)
from runtime.limits import peer_address
from runtime.observability import REQUEST_ID_ATTRIBUTE, VERSION_ATTRIBUTE
from runtime.ratelimit import RateLimit, RateLimiter, check_rate
from runtime.status import REQUEST_ID_KEY
from runtime.versions import Conversion, retired_error

if TYPE_CHECKING:
    from runtime.gateway._routes import Route

__all__ = [
    "ClientCalls",
    "ClientCertificates",
    "Credentials",
    "Forward",
    "GatewayCall",
    "Step",
    "build_chain",
    "peer_ip",
    "request_id",
]

VERIFIED_TOKENS = 4096
"""Bearer tokens whose verification is remembered (per gateway); the oldest go first beyond it."""


@dataclass(slots=True)
class GatewayCall:
    """What one call through the gateway knows so far: the input of every step."""

    payload: bytes
    headers: dict[str, str]
    """The caller's text metadata (grpc hands keys over lower-cased; ``-bin`` values are not
    needed for routing)."""
    context: grpc.aio.ServicerContext[bytes, bytes]
    span: trace.Span
    request_id: str = ""
    principal: Principal = ANONYMOUS
    forwarded_principal: str = ""
    """The principal as the ``x-modrpc-principal`` header the worker reads."""
    version: str = "unresolved"
    """The version the caller's ``x-api-version`` resolves to."""
    target: str = ""
    """The version that serves the call."""
    conversion: Conversion | None = None
    """How the call reaches ``target``; None when the bytes pass through untouched."""
    client: str = ""
    """The client the call counts against in :class:`ClientCalls` ('' until it is counted)."""
    arrived_after: float = 0.0
    """Seconds the request took to arrive once the chain was done: spent from the method's timeout."""
    answered: bool = False
    """Whether a response message has been written to the caller (streams)."""


Step = Callable[[GatewayCall], "Awaitable[None] | None"]
"""One link of the chain: fills in ``call`` or raises; async only where it must wait."""


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

    def authenticate(
        self, headers: Mapping[str, str], *, public: bool, certificate: Principal | None = None
    ) -> tuple[Principal, str]:
        """The caller's principal and its forwarded header; raises what the authenticator raises.

        ``certificate``: the principal of the connection's client certificate (an edge with
        ``tls.client_ca``), which a call without a token or API key runs as.
        """
        authorization = headers.get("authorization")
        if authorization is not None and "x-api-key" not in headers:
            known = self._tokens.get(authorization)
            if known is not None and known[2] <= self._clock() < known[3]:
                return known[0], known[1]
        if certificate is not None and authorization is None and "x-api-key" not in headers:
            return certificate, principal_header(certificate)
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


# -- the steps ---------------------------------------------------------------------------------


def request_id(call: GatewayCall) -> None:
    """Keep the caller's well-formed ``x-request-id`` or make one, and return it in the trailers
    (with the status, on success and failure alike: initial metadata sent on its own costs
    grpc.aio a batch of its own on every call)."""
    call.request_id = rid = request_id_of(call.headers.get(REQUEST_ID_KEY))
    call.context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
    call.span.set_attribute(REQUEST_ID_ATTRIBUTE, rid)


class Authenticate:
    """Who is calling: a JWT, an API key or a client certificate; none needed for a public method.

    Metadata with a credential header twice is refused here, before either is looked at; the
    check runs only when a key appeared twice at all (fewer text headers than metadata pairs).
    """

    __slots__ = ("_client_certs", "_credentials", "_public")

    def __init__(self, credentials: Credentials, *, public: bool, client_certs: ClientCertificates | None = None) -> None:
        self._credentials = credentials
        self._public = public
        self._client_certs = client_certs

    def __call__(self, call: GatewayCall) -> None:
        metadata = call.context.invocation_metadata() or ()
        if len(metadata) != len(call.headers):
            check_single_credentials(metadata)
        headers = call.headers
        certificate = None
        if self._client_certs is not None and "authorization" not in headers and "x-api-key" not in headers:
            certificate = self._client_certs.principal(call.context)  # only when it is the credential
        call.principal, call.forwarded_principal = self._credentials.authenticate(
            call.headers, public=self._public, certificate=certificate
        )


class ClientCalls:
    """At most ``limit`` calls running through the gateway per client, and ``anonymous_limit``
    for all anonymous callers together, or RESOURCE_EXHAUSTED.

    grpc bounds the calls of one server (``max_concurrent_calls``) and of one connection, not
    of one client: a single anonymous address could otherwise hold every call slot with streams
    it opens and never uses, locking everyone out until the route's timeout. A client is the
    principal it authenticated as; without credentials (a public method), its IP address, so
    anonymous callers behind one address share one budget. Anonymous callers from many
    addresses share ``anonymous_limit``, so what is left of ``max_concurrent_calls`` stays for
    callers with credentials. The counts are released when grpc has ended the call, however it
    ends.
    """

    __slots__ = ("_anonymous", "_anonymous_limit", "_limit", "_running")

    def __init__(self, limit: int, anonymous_limit: int | None = None) -> None:
        self._limit = limit
        self._anonymous_limit = anonymous_limit
        self._running: dict[str, int] = {}
        self._anonymous = 0

    def __call__(self, call: GatewayCall) -> None:
        principal = call.principal
        anonymous = principal.method == "anonymous"
        client = self.address(call.context) if anonymous else f"{principal.method} {principal.subject}"
        self.admit(client, anonymous, call.context)
        call.client = client

    @staticmethod
    def address(context: grpc.aio.ServicerContext[bytes, bytes]) -> str:
        """The client an anonymous call counts against: its IP address."""
        peer = context.peer()
        return f"address {peer_ip(peer) or peer}"

    def admit(self, client: str, anonymous: bool, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        """Count one call of ``client`` until grpc has ended it, or raise ResourceExhausted."""
        running = self._running.get(client, 0)
        if running >= self._limit:
            raise ResourceExhausted(
                f"{client} already has {running} calls running through the gateway, its most "
                "(limits.max_calls_per_client); let one finish first"
            )
        if anonymous:
            if self._anonymous_limit is not None and self._anonymous >= self._anonymous_limit:
                raise ResourceExhausted(
                    f"callers without credentials already have {self._anonymous} calls running "
                    "through the gateway, their most together (limits.max_anonymous_calls); "
                    "call with credentials, or try again later"
                )
            self._anonymous += 1
        self._running[client] = running + 1
        # Released when grpc has ended the call, not when the handler returns: an answer the
        # caller never lets in (a zero flow-control window) keeps grpc's call, and its slot of
        # max_concurrent_calls, long after the handler is done.
        context.add_done_callback(functools.partial(self._ended, client, anonymous))  # type: ignore[arg-type]  # grpc-stubs want a DoneCallback class; grpc calls any callable

    def _ended(self, client: str, anonymous: bool, _context: object) -> None:
        left = self._running[client] - 1
        if left:
            self._running[client] = left
        else:
            del self._running[client]
        if anonymous:
            self._anonymous -= 1

    def running(self, client: str) -> int:
        """Calls ``client`` (as the refusal names it: ``address 1.2.3.4``, ``jwt alice``) has running."""
        return self._running.get(client, 0)

    def running_anonymous(self) -> int:
        """Calls without credentials running, from every address."""
        return self._anonymous


class ClientCertificates:
    """The principal a client certificate names at a TLS edge with ``tls.client_ca``: its common
    name as the subject, with the roles ``tls.client_roles`` gives it (``method`` ``mtls``)."""

    __slots__ = ("_known", "_roles")

    def __init__(self, roles: Mapping[str, tuple[str, ...]]) -> None:
        self._roles = dict(roles)
        self._known: dict[bytes, Principal] = {}

    def principal(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> Principal | None:
        names = list(context.auth_context().get("x509_common_name", ()))
        if not names:
            return None
        name = names[0]
        principal = self._known.get(name)
        if principal is None:
            subject = name.decode(errors="replace")
            principal = Principal(subject=subject, roles=self._roles.get(subject, ()), method="mtls")
            if len(self._known) >= VERIFIED_TOKENS:
                self._known.clear()
            self._known[name] = principal
        return principal


class ResolveVersion:
    """Which version the caller's ``x-api-version`` means, once; a retired one is NOT_FOUND."""

    __slots__ = ("_route",)

    def __init__(self, route: Route) -> None:
        self._route = route

    def __call__(self, call: GatewayCall) -> None:
        routes = self._route.routes
        call.version = version = routes.catalog.resolve(call.headers.get("x-api-version"))
        call.span.set_attribute(VERSION_ATTRIBUTE, version)
        if version in routes.retired:
            raise retired_error(routes.name, version)


class Authorize:
    """The caller holds every role the method requires, or PERMISSION_DENIED."""

    __slots__ = ("_roles",)

    def __init__(self, roles: tuple[str, ...]) -> None:
        self._roles = roles

    def __call__(self, call: GatewayCall) -> None:
        check_roles(call.principal, self._roles)


class RateLimitStep:
    """At most the method's ``rate_limit`` per caller, or RESOURCE_EXHAUSTED with RetryInfo."""

    __slots__ = ("_limit", "_limiter", "_path")

    def __init__(self, limiter: RateLimiter, limit: RateLimit, path: str) -> None:
        self._limiter = limiter
        self._limit = limit
        self._path = path

    async def __call__(self, call: GatewayCall) -> None:
        await check_rate(self._limiter, f"{self._path}|{call.principal.subject}", self._limit)


class PickInstance:
    """The served version the call goes to and how it gets there; counts usage per version.

    When no healthy worker of the module serves at all right now (they are restarting, or
    every one of them left), the call waits for the route table to change, within its deadline,
    rather than failing at once; then UNAVAILABLE names what is missing. A stopping gateway ends
    the wait. While other versions are served and none leads to the caller's, it is UNAVAILABLE
    at once: a worker of that version is not on its way back.
    """

    __slots__ = ("_route",)

    def __init__(self, route: Route) -> None:
        self._route = route

    def __call__(self, call: GatewayCall) -> Awaitable[None] | None:
        route = self._route
        planned = route.plan(call.version)
        if planned is None:
            if not route.routes.served:
                return self._wait_for_worker(call)
            raise self._unavailable(route, call)
        self._picked(call, planned)
        return None

    @staticmethod
    def _unavailable(route: Route, call: GatewayCall) -> Unavailable:
        served = ", ".join(route.routes.served) or "none running"
        return Unavailable(
            f"no healthy worker serves {route.module} {call.version}, and no transformer chain "
            f"leads from it to a served version ({served})"
        )

    def _picked(self, call: GatewayCall, planned: tuple[str, Conversion | None]) -> None:
        route = self._route
        call.target, call.conversion = planned
        services = route.services
        services.usage.count(route.module, call.version)
        if call.version in route.routes.cold and services.reporter is not None:
            services.reporter.promote_soon(route.module, call.version)

    async def _wait_for_worker(self, call: GatewayCall) -> None:
        route = self._route
        tables = route.services.tables
        remaining = call.context.time_remaining()
        deadline = Deadline.after(route.policy.timeout if remaining is None else min(remaining, route.policy.timeout))
        current = route
        while not deadline.expired() and not tables.closing:
            await tables.wait(deadline.remaining())
            table = tables.current
            found = table.routes.get(route.path) if table is not None else None
            if found is None:
                break  # the module left the gateway altogether
            current = found
            planned = current.plan(call.version)
            if planned is not None:
                self._picked(call, planned)
                return
            if current.routes.served:
                break  # the module is back, but nothing it serves leads to this version
        if tables.closing:
            raise Unavailable(f"the gateway is shutting down; {route.module} was not called")
        raise self._unavailable(current, call)


class Forward:
    """Send the call to an instance of the served version, through its conversion if any.

    The deadline is built here, once: the caller's, capped by what the method's timeout leaves
    after the request's arrival. Only the
    metadata named here travels on, so hop-by-hop headers never reach a worker; the worker
    learns the caller from ``x-modrpc-principal`` and ``x-forwarded-for`` gains this peer.
    """

    __slots__ = ("_client", "_idempotent", "_message_limit", "_module", "_path", "_retry", "_snapshot_roles", "_timeout")

    def __init__(self, route: Route, client: ModuleClient, retry: RetryPolicy) -> None:
        self._snapshot_roles = route.services.snapshot_roles
        self._module = route.module
        self._path = route.path
        self._timeout = route.policy.timeout
        self._idempotent = route.policy.idempotent
        self._client = client
        self._retry = retry
        policy = route.policy
        self._message_limit: tuple[RateLimiter, RateLimit] | None = None
        if policy.message_rate_limit:
            self._message_limit = (route.services.limiter, RateLimit.parse(policy.message_rate_limit))

    def _outgoing(self, call: GatewayCall) -> tuple[Deadline, list[tuple[str, str | bytes]]]:
        """The deadline and the metadata the call travels on with."""
        context = call.context
        remaining = context.time_remaining()
        timeout = self._timeout - call.arrived_after
        deadline = Deadline.after(timeout if remaining is None else min(remaining, timeout))
        metadata: list[tuple[str, str | bytes]] = [
            (REQUEST_ID_KEY, call.request_id),
            ("x-api-version", call.target),
            (PRINCIPAL_HEADER, call.forwarded_principal),
        ]
        headers = call.headers
        flags = headers.get("x-flags")
        if flags:  # only calls that carry flags pay for the check
            flags = forwarded_flags(flags, call.principal, self._snapshot_roles)
            if flags:
                metadata.append(("x-flags", flags))
        peer = peer_ip(context.peer())
        forwarded_for = headers.get("x-forwarded-for")
        if peer is not None:
            forwarded_for = f"{forwarded_for}, {peer}" if forwarded_for else peer
        if forwarded_for:
            metadata.append(("x-forwarded-for", forwarded_for))
        return deadline, metadata

    async def stream(self, call: GatewayCall, requests: AsyncIterable[bytes]) -> None:
        """Carry a streaming call: request messages to the worker, response messages back, each
        converted for the caller's version on its own; written to the caller at its pace."""
        deadline, metadata = self._outgoing(call)
        conversion = call.conversion
        outgoing = requests
        checked = None
        if conversion is not None or self._message_limit is not None:
            limit = None if self._message_limit is None else (f"{self._path}|messages|{call.principal.subject}", *self._message_limit)
            checked = _CheckedRequests(requests, conversion, limit, deadline)
            outgoing = checked.messages()
        stream = self._client.stream(
            f"{self._module}@{call.target}", self._path, outgoing, metadata=metadata, deadline=deadline,
            idempotent=self._idempotent, retry=self._retry,
        )  # fmt: skip
        write = call.context.write
        try:
            if conversion is None:  # the hot path: the bytes go through untouched
                async for message in stream:
                    await write(message)
                    call.answered = True
            else:
                async for message in stream:
                    await write(await conversion.response(conversion.decode_response(message), deadline))
                    call.answered = True
        except ModrpcError:
            if checked is not None and checked.error is not None:
                raise checked.error from None  # the stream was cancelled because of it: the real answer
            raise
        finally:
            await stream.aclose()

    async def __call__(self, call: GatewayCall) -> bytes:
        deadline, metadata = self._outgoing(call)
        key = f"{self._module}@{call.target}"
        conversion = call.conversion
        if conversion is None:  # the hot path: the bytes go through untouched
            response, _ = await self._client.call(
                key, self._path, call.payload, metadata=metadata, deadline=deadline,
                idempotent=self._idempotent, retry=self._retry,
            )  # fmt: skip
            return response
        value = await conversion.request(call.payload, deadline)  # checked at the caller's version
        if not conversion.transforms:  # compatible versions: the old bytes are valid new bytes
            response, _ = await self._client.call(
                key, self._path, call.payload, metadata=metadata, deadline=deadline,
                idempotent=self._idempotent, retry=self._retry,
            )  # fmt: skip
            return response
        response, _ = await self._client.call(
            key, self._path, conversion.encode_request(value), metadata=metadata, deadline=deadline,
            idempotent=self._idempotent, retry=self._retry,
        )  # fmt: skip
        return await conversion.response(conversion.decode_response(response), deadline)


class _CheckedRequests:
    """A stream's request messages, each counted against a per-message rate limit and converted
    for the served version, as they are sent; the first refusal is kept in :attr:`error`, since
    the transport reports a request stream that failed only as the call's cancellation."""

    __slots__ = ("_conversion", "_deadline", "_limit", "_requests", "error")

    def __init__(
        self,
        requests: AsyncIterable[bytes],
        conversion: Conversion | None,
        limit: tuple[str, RateLimiter, RateLimit] | None,
        deadline: Deadline,
    ) -> None:
        self._requests = requests
        self._conversion = conversion
        self._limit = limit
        self._deadline = deadline
        self.error: ModrpcError | None = None

    async def messages(self) -> AsyncIterator[bytes]:
        conversion, limit, deadline = self._conversion, self._limit, self._deadline
        async for message in self._requests:
            try:
                if limit is not None:
                    await check_rate(limit[1], limit[0], limit[2])
                if conversion is not None:
                    message = conversion.encode_request(await conversion.request(message, deadline))
            except ModrpcError as exc:
                self.error = exc
                raise
            yield message


@functools.lru_cache(maxsize=1024)
def peer_ip(peer: str) -> str | None:
    """The IP address in a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``), if any
    (:func:`~runtime.limits.peer_address`).

    Remembered per peer string: a gateway sees the same few connections call after call.
    """
    found = peer_address(peer)
    return None if found is None else found[0]


def build_chain(route: Route) -> tuple[tuple[Step, ...], Forward]:
    """The steps a call to ``route`` runs after :func:`request_id`, in order, and the forward
    that ends them."""
    services = route.services
    policy = route.policy
    steps: list[Step] = [
        Authenticate(services.credentials, public=policy.public, client_certs=services.client_certs),
        services.client_calls,
        ResolveVersion(route),
    ]
    if policy.roles:
        steps.append(Authorize(tuple(policy.roles)))
    if policy.rate_limit:
        steps.append(RateLimitStep(services.limiter, RateLimit.parse(policy.rate_limit), route.path))
    steps.append(PickInstance(route))
    return tuple(steps), Forward(route, services.client, RetryPolicy.from_manifest(policy.retry))
