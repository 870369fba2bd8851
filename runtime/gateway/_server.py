"""The gateway: every module behind one gRPC port.

Ingress (authentication, metadata, request id) and the route manager (version, roles, rate
limit, healthy instance) run per call inside :class:`~runtime.gateway._routes.Route`. The
routes themselves are rebuilt from the manifest store whenever it reports a change, and swapped
in whole, so a call never reads the store and never waits on a lock.

Reflection answers with the descriptors of the version the caller's ``x-api-version`` resolves
to, so ``grpcurl -H 'x-api-version: 2025-01-15' describe`` shows the old shapes.

Two kinds of TLS meet here. The edge serves TLS when ``tls.cert`` and ``tls.key`` are set (and
requires client certificates from ``tls.client_ca`` when that is set), re-reading the files on
each handshake after they change. Behind it, every call to a worker is mutual TLS with the
gateway's own certificate from the deployment CA (``gateway`` in ``tls.dir``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from runtime.client import InstancePool, ModuleClient
from runtime.config import Settings
from runtime.errors import Unavailable
from runtime.gateway._auth import Authenticator
from runtime.gateway._ingress import ClientCertificates
from runtime.gateway._keys import check_dev_secret, jwt_secret_in_force
from runtime.gateway._public import within_budget
from runtime.gateway._routes import RouteTable, Usage, _Services, build_table
from runtime.gateway._unknown import UnknownMethods
from runtime.gateway._usage import UsageReporter
from runtime.health import HealthService
from runtime.identity import Peer
from runtime.limits import (
    AddressBans,
    AnsweredStreams,
    Offender,
    ResetGuard,
    admin_limits,
    grpc_server_limits,
)
from runtime.observability import (
    AdminServer,
    ClientTracer,
    Metrics,
    RedMetrics,
    ServerTracer,
    start_admin_server,
)
from runtime.ratelimit import open_ratelimiter
from runtime.tls import InternalTls, KeyPair
from runtime.transport import InProcessModules
from runtime.versions import VersionedReflection
from runtime.wire import handler_id_of, service_name

if TYPE_CHECKING:
    from runtime.store import ManifestStore

__all__ = ["Gateway", "authenticator_from_settings"]

log = logging.getLogger("modrpc.gateway")

REFRESH_SECONDS = 2.0
REFUSE_BEFORE_STOP_SECONDS = 0.3
"""On stop, how long new calls are refused (UNAVAILABLE) before the gRPC server itself stops."""
USAGE_FLUSH_SECONDS = 10.0
"""How long ``stop`` lets the usage reporter write the last counts."""
"""How often routes are rebuilt even without a store event, to drop workers that went silent."""


def authenticator_from_settings(settings: Settings) -> Authenticator:
    """The gateway's authenticator: HS256 only with the secret in force (see
    :func:`~runtime.gateway.jwt_secret_in_force`), every configured public key, the API keys."""
    auth = settings.auth
    secret = jwt_secret_in_force(settings)
    return Authenticator(
        hs256_secret=secret.value,
        public_keys_pem=[p.read_text() for p in auth.jwt_public_keys],
        jwks_path=auth.jwks_path,
        issuer=auth.issuer,
        audience=auth.audience,
        leeway=auth.leeway,
        algorithms=auth.jwt_algorithms,
        api_keys={k: (v.hash, v.subject, tuple(v.roles)) for k, v in auth.api_keys.items()},
        max_lifetime=auth.max_token_lifetime,
        hs256_label="the development secret (loopback only)" if secret.development else "auth.jwt_secret",
    )


class _Router(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Looks a method path up in the current table; unknown paths fall through to the handlers
    registered after it (health, reflection, then :class:`UnknownMethods`)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        return self._gateway.table.handlers.get(handler_call_details.method)


class Gateway:
    """The gRPC front door. Use ``async with Gateway(settings)`` or ``start()``/``stop()``.

    ``local`` holds the modules served inside this process (the embedded mode, ``modrpc up
    --embedded``): calls to them skip the network. Routing, policies and health still come from
    the manifest store, where the in-process workers register like any other.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        host: str | None = None,
        port: int | None = None,
        local: InProcessModules | None = None,
    ) -> None:
        self.settings = settings
        self.local = local
        self.host = host or settings.host
        self.port = settings.gateway_port if port is None else port
        self.address = ""
        self.table = RouteTable({}, {}, {})
        self.usage = Usage()
        self.store: ManifestStore | None = None
        self._server: grpc.aio.Server | None = None
        self._health = HealthService()
        self._tasks: list[asyncio.Task[None]] = []
        self._services: _Services | None = None
        self._changed = asyncio.Event()
        self._refreshing = asyncio.Lock()
        self._usage_task: asyncio.Task[None] | None = None
        self._stopped = False
        self._store_failing = False
        self._store_back_at: float | None = None
        """When the store answered again after failing (unix seconds): workers' freshness counts
        from there, since none of them could heartbeat meanwhile."""
        self.metrics = Metrics(service_name="modrpc-gateway")
        self._admin: AdminServer | None = None
        self.tls: InternalTls | None = None
        self.edge: KeyPair | None = None
        """The edge's TLS files (None: the edge is plaintext)."""

    @property
    def admin(self) -> AdminServer | None:
        """The admin HTTP server (``/metrics``; the playground mounts on it), once started."""
        return self._admin

    async def start(self) -> str:
        from runtime.store import open_store

        settings = self.settings
        check_dev_secret(settings, self.host)
        auth = authenticator_from_settings(settings)
        edge = settings.tls
        if edge.cert is not None and edge.key is not None:
            self.edge = KeyPair(edge.cert, edge.key, edge.client_ca)
        self.tls = tls = InternalTls.load(settings.tls.dir, Peer.gateway(), dev_ca=settings.tls.dev_ca)
        self.store = open_store(settings.store_url)
        await self.store.start()
        # Client spans are made inline by the module client: a grpc.aio client interceptor would
        # add a task and wrapper objects to every call.
        pool = InstancePool(
            max_message_bytes=settings.max_message_bytes, lanes=settings.lane, local=self.local, tls=tls
        )
        self._services = _Services(
            auth=auth,
            limiter=open_ratelimiter(
                settings.ratelimit_url,
                failure_mode=settings.ratelimit_failure_mode,
                max_keys=settings.ratelimit_max_keys,
            ),
            client=ModuleClient(pool, tracing=ClientTracer(handler_of=handler_id_of)),
            tracing=ServerTracer(handler_of=handler_id_of),
            usage=self.usage,
            red=RedMetrics(self.metrics),
            reporter=UsageReporter(self.store, self.usage.counts),
            client_certs=ClientCertificates(edge.client_roles) if edge.client_ca is not None else None,
            snapshot_roles=frozenset(settings.auth.snapshot_roles),
            max_metadata_bytes=settings.limits.max_metadata_bytes,
            max_calls_per_client=settings.limits.max_calls_per_client,
            max_anonymous_calls=settings.limits.max_anonymous_calls,
            unrouted_rate_limit=settings.limits.unrouted_rate_limit,
        )
        if settings.admin_port:
            self._admin = start_admin_server(
                settings.host, settings.admin_port, metrics=self.metrics, limits=admin_limits(settings.limits)
            )
            log.info("gateway metrics on http://%s:%d/metrics", settings.host, self._admin.port)
        await self.refresh()
        # Connections, streams, timeouts and message sizes are bounded by grpc core itself.
        limits = grpc_server_limits(settings.limits, settings.max_message_bytes)
        server = grpc.aio.server(
            options=limits.options, maximum_concurrent_rpcs=limits.maximum_concurrent_rpcs
        )
        server.add_generic_rpc_handlers((_Router(self),))
        # No tracing interceptor: grpc.aio would run it as one more coroutine on every call. Each
        # route opens its server span itself (ServerTracer), continuing the caller's trace, and
        # the module client's span carries it on to the worker, so one trace spans caller →
        # gateway → worker → module calls. Health checks and reflection are not traced here;
        # like public methods, they count against the anonymous callers' budget.
        admission = self._services.unrouted
        reflecting = VersionedReflection(
            lambda: {name: module.catalog for name, module in self.table.modules.items()},
            (health.SERVICE_NAME, reflection.SERVICE_NAME),
        )
        server.add_generic_rpc_handlers(
            (
                within_budget(health_pb2_grpc.add_HealthServicer_to_server, self._health, admission),
                within_budget(reflection_pb2_grpc.add_ServerReflectionServicer_to_server, reflecting, admission),
            )
        )
        # Last: whatever no route, health or reflection serves is UNIMPLEMENTED, with a request id.
        server.add_generic_rpc_handlers((UnknownMethods(self._services.red, admission),))
        if self.edge is not None:
            bound = server.add_secure_port(f"{self.host}:{self.port}", self.edge.server_credentials())
        else:
            bound = server.add_insecure_port(f"{self.host}:{self.port}")
        if bound == 0:
            raise OSError(f"cannot listen on {self.host}:{self.port}")
        await server.start()
        self._server = server
        self.port = bound
        self.address = f"{self.host}:{bound}"
        self._log_security(auth)
        admission.on_flood = self._guard_resets(bound, self._services.answered)
        self._tasks.append(asyncio.create_task(self._watch(), name="modrpc-gateway-watch"))
        self._tasks.append(asyncio.create_task(self._tick(), name="modrpc-gateway-refresh"))
        self._tasks.append(asyncio.create_task(self._services.arrivals.run(), name="modrpc-gateway-arrivals"))
        assert self._services.reporter is not None
        self._usage_task = asyncio.create_task(self._services.reporter.run(), name="modrpc-gateway-usage")
        log.info("gateway listening on %s", self.address)
        return self.address

    def _guard_resets(self, port: int, answered: AnsweredStreams) -> Callable[[str, str], None] | None:
        """Close client connections that reset streams in a loop (``limits.max_reset_streams``):
        grpc's own options bound how many streams they hold, not how many they burn. What bans
        an address flooding grpc's own services (None: the guard is off)."""
        limits = self.settings.limits
        if not limits.max_reset_streams:
            return None
        closed = self.metrics.counter(
            "modrpc_connections_closed_total", "Client connections the gateway closed, by reason."
        )

        bans = self.metrics.counter(
            "modrpc_address_bans_total", "Client addresses refused new connections for a while after a rapid reset or a flood, by reason."
        )

        for reason in ("rapid_reset", "flood"):  # listed from the start, at zero
            closed.add(0, {"reason": reason})
            bans.add(0, {"reason": reason})

        def count(offender: Offender) -> None:
            if offender.closed:
                closed.add(1, {"reason": offender.reason})
            if offender.banned_for:
                bans.add(1, {"reason": offender.reason})

        guard = ResetGuard(
            port,
            max_reset_streams=limits.max_reset_streams,
            interval=limits.reset_check_interval,
            running=limits.max_concurrent_calls,
            answered=answered,
            on_close=count,
            bans=(
                AddressBans(port, first=limits.reset_ban, longest=limits.reset_ban_max, exempt=limits.reset_ban_exempt)
                if limits.reset_ban
                else None
            ),
        )
        self._tasks.append(asyncio.create_task(guard.run(), name="modrpc-gateway-reset-guard"))
        return guard.refuse

    def _log_security(self, auth: Authenticator) -> None:
        """Say at start what the gateway accepts and how it talks, so nothing is a surprise."""
        log.info("gateway accepts: %s", "; ".join(auth.describe()))
        edge = self.edge
        if edge is None:
            log.info("gateway edge on %s is plaintext (set tls.cert and tls.key for TLS)", self.address)
        else:
            clients = f", client certificates from {edge.ca} required" if edge.ca is not None else ""
            log.info("gateway edge on %s is TLS with %s%s", self.address, edge.cert, clients)
        assert self.tls is not None
        log.info("gateway calls workers over mutual TLS as %s (CA %s)", self.tls.peer, self.tls.ca_file)

    async def refresh(self) -> None:
        """Rebuild the route table from the store and swap it in.

        One rebuild at a time: two overlapping ones (the refresh loop and ``wait_ready``) could
        otherwise finish out of order and swap in the older table last.
        """
        assert self._services is not None and self.store is not None, "refresh() before start()"
        async with self._refreshing:
            try:
                table = await build_table(self.store, self._services, store_back_at=self._store_back_at)
            except Exception:
                self._store_failing = True
                raise
            if self._store_failing:
                self._store_failing = False
                self._store_back_at = time.time()
                log.warning("the store %s answers again; workers get time to heartbeat before any counts as stale", self.store.url)
                table = await build_table(self.store, self._services, store_back_at=self._store_back_at)
            self.table = table
            self._services.tables.publish(table)
            if self._services.reporter is not None:  # the new table knows the current states
                self._services.reporter.forget_promotions()
            for name, module in table.modules.items():
                serving = module.served
                status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
                await self._health.set(service_name(name), status)

    async def _watch(self) -> None:
        store = self.store
        assert store is not None, "started by start(), after the store"
        while True:
            try:
                async for _event in store.watch():
                    self._changed.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("store watch failed (%s); routing continues from the cached table", exc)
                await asyncio.sleep(1.0)

    async def _tick(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when it is
            # cancelled just as the event is set, and this loop would then outlive stop().
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_SECONDS):
                    await self._changed.wait()
            self._changed.clear()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("route refresh failed (%s); keeping the previous routes", exc)

    async def wait_ready(self, modules: Sequence[str] = (), timeout: float = 30.0) -> None:
        """Wait until every module (all known ones when empty) has a served version."""
        async def ready() -> None:
            while True:
                table = self.table
                names = modules or list(table.modules)
                if names and all(n in table.modules and table.modules[n].served for n in names):
                    return
                await asyncio.sleep(0.05)
                await self.refresh()

        try:
            async with asyncio.timeout(timeout):
                await ready()
        except TimeoutError:
            table = self.table
            if modules:
                missing = [n for n in modules if n not in table.modules or not table.modules[n].served]
                reason = f"no worker serves {', '.join(missing)}"
            else:
                known = ", ".join(sorted(table.modules)) or "none"
                reason = f"no module has a served version (known modules: {known})"
            raise Unavailable(f"gateway not ready after {timeout:g}s: {reason}") from None
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, stop accepting, drain calls in flight, close. Safe twice."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.drain_seconds if grace is None else grace
        await self._health.enter_graceful_shutdown()
        if self._services is not None:
            # New calls are refused with UNAVAILABLE from now on, and calls waiting for a worker
            # end so too: they never ran, so a client may retry them elsewhere; calls under way
            # run on within the grace.
            self._services.tables.close()
            self._services.client.pool.drain()
        if self._server is not None:
            # A moment in which calls already on their way are answered UNAVAILABLE by the
            # routes, before grpc stops the server: grpc cancels calls it has received and not yet
            # started, and a CANCELLED tells a client nothing it can act on.
            await asyncio.sleep(min(REFUSE_BEFORE_STOP_SECONDS, grace))
            await self._server.stop(grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._stop_usage()
        if self._services is not None:
            with contextlib.suppress(Exception):
                await self._services.client.close()
            with contextlib.suppress(Exception):
                await self._services.limiter.close()
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()
        if self._admin is not None:
            self._admin.close()

    async def _stop_usage(self) -> None:
        """Let the usage reporter write the last counts (bounded), so no usage is lost."""
        reporter = self._services.reporter if self._services is not None else None
        if reporter is None:
            return
        reporter.stop()
        task = self._usage_task
        try:
            async with asyncio.timeout(USAGE_FLUSH_SECONDS):
                if task is not None:
                    await asyncio.shield(task)
                else:
                    await reporter.flush()
        except TimeoutError:
            if task is not None:
                task.cancel()
            log.error("the store did not take the last usage counts within %.0fs", USAGE_FLUSH_SECONDS)
        except Exception as exc:
            log.error("the last usage counts could not be written: %s", exc)

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
