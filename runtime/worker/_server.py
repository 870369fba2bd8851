"""``modrpc worker MODULE``: serve one module on grpc.aio, registered in the manifest store.

Startup: load and check the module, find its certificate (``module-<name>`` in ``tls.dir``), open
the backends the config names, start the gRPC server (module service, ``grpc.health.v1``,
reflection) and the lane, both mutual TLS only, publish the module's versions to the store and
register this worker with its address, then heartbeat. There is no plaintext port: every caller
proves who it is with a certificate of the deployment's CA (see :mod:`runtime.worker._admission`
for what each may do). Shutdown (SIGTERM/Ctrl-C): report
NOT_SERVING and deregister so gateways stop routing here, stop accepting, drain the calls in
flight up to the drain deadline, then close the backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from runtime.client import InstancePool, ModuleClient
from runtime.config import RetentionSettings, Settings
from runtime.fabric import OutboxRelay
from runtime.health import HealthService
from runtime.identity import Peer
from runtime.lane import LaneServer, lane_limits, where_handler
from runtime.lcc import LogSnapshotStore, SnapshotStore, WriteBehindSnapshots
from runtime.limits import admin_limits, grpc_server_limits
from runtime.manifest import check_registration, discover_modules, load_module
from runtime.observability import (
    AuditObserver,
    AuditSink,
    ClientTracer,
    Counter,
    Metrics,
    RedMetrics,
    ServerTracer,
    audit_redactor,
    open_audit_sink,
    start_admin_server,
    write_audit,
)
from runtime.tls import InternalTls
from runtime.transport import InProcessModules
from runtime.versions import REMOVED_KEY, VersionedReflection
from runtime.wire import handler_id_of, service_name
from runtime.worker._directory import WorkerDirectory
from runtime.worker._replay import Sandbox, sandbox_handler
from runtime.worker._service import ModuleService, WorkerDeps
from runtime.worker._spool import SnapshotSpool

if TYPE_CHECKING:
    from runtime.store import ManifestStore

__all__ = ["Worker"]

log = logging.getLogger("modrpc.worker")

HEARTBEAT_SECONDS = 2.0
AUDIT_UNWIND_SECONDS = 10.0
"""How long ``stop`` waits, after the grace, for cancelled calls to finish their undo steps."""
AUDIT_FLUSH_SECONDS = 10.0
"""How long ``stop`` lets the audit sink take the last records."""


async def _retain(
    retention: RetentionSettings,
    audit: AuditSink,
    snapshots: SnapshotStore,
    metrics: Metrics,
    clock: Callable[[], float] = time.time,
) -> None:
    """Retention, now and then every ``retention.interval``: audit records and snapshots past
    their age or their total size are removed, and counted in the ``_pruned_total`` metrics.

    Every worker of a store (or an audit file) runs it; a second pass over what another worker
    just pruned removes nothing.
    """
    audit_pruned = metrics.counter("modrpc_audit_pruned_total", "Audit records removed by retention.")
    snapshots_pruned = metrics.counter(
        "modrpc_snapshots_pruned_total", "Stored snapshots removed by retention."
    )
    for counter in (audit_pruned, snapshots_pruned):
        counter.add(0)  # listed from the start: a zero is told apart from a missing metric
    passes: tuple[tuple[str, Any, float, int, Counter], ...] = (
        ("audit records", audit, retention.audit_max_age, retention.audit_max_bytes, audit_pruned),
        ("snapshots", snapshots, retention.snapshot_max_age, retention.snapshot_max_bytes, snapshots_pruned),
    )  # fmt: skip
    while True:
        for what, target, max_age, max_bytes, counter in passes:
            try:
                removed = await target.prune(before=clock() - max_age, max_bytes=max_bytes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store may be down for a while: the next pass retries
                log.warning("retention: old %s could not be removed: %s", what, exc)
                continue
            if removed:
                counter.add(removed)
                log.info("retention removed %d %s", removed, what)
        await asyncio.sleep(retention.interval)


class Worker:
    """One module served on one port. Use ``async with`` or ``start()``/``stop()``."""

    def __init__(
        self,
        module: str,
        settings: Settings,
        *,
        host: str | None = None,
        port: int = 0,
        modules_dir: Path | None = None,
        worker_id: str | None = None,
        register: bool = True,
        local: InProcessModules | None = None,
    ) -> None:
        self.module = module
        self.settings = settings
        self.host = host or settings.host
        self.port = port
        self.modules_dir = Path(modules_dir or settings.modules_dir)
        self.worker_id = worker_id or f"{module}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.register = register
        # Where the module is also served in process (the embedded mode), and where the module's
        # own calls to other modules look first.
        self.local = local
        self.address = ""
        self._server: grpc.aio.Server | None = None
        self._health = HealthService()
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Any] = []
        self.service: ModuleService | None = None
        self._observer: AuditObserver | None = None
        self._admin: Any = None
        self.metrics_address = ""
        self._audit: Any = None
        self._audit_task: asyncio.Task[None] | None = None
        self.store: ManifestStore | None = None
        self._stopped = False
        self._lane: LaneServer | None = None
        self._outbox: OutboxRelay | None = None
        self._snapshots: WriteBehindSnapshots | None = None
        self.tls: InternalTls | None = None

    @property
    def lane_address(self) -> str:
        """Where the worker's lane listens (``host:port``); empty when it has none."""
        return self._lane.address if self._lane is not None else ""

    async def start(self) -> str:
        """Start serving; returns the ``host:port`` address."""
        from runtime.fabric import open_fabric
        from runtime.secrets import RedactingFilter, open_secrets
        from runtime.store import open_store

        settings = self.settings
        loaded = load_module(self.modules_dir / self.module)
        known = {p.name for p in discover_modules(self.modules_dir)}
        check_registration(loaded, known)
        self.tls = tls = InternalTls.load(settings.tls.dir, Peer.module(self.module), dev_ca=settings.tls.dev_ca)

        self.store = open_store(settings.store_url)
        await self.store.start()
        self._closers.append(self.store)
        fabric = open_fabric(settings.fabric_url, tls=tls)
        await fabric.start()
        self._closers.append(fabric)
        # Handlers' events go through the outbox: committed locally, relayed when the fabric
        # takes them (runtime.fabric.OutboxRelay). Stopped before the fabric closes.
        self._outbox = OutboxRelay(fabric, Path(settings.data_dir) / "outbox" / f"{self.module}.sqlite3")
        await self._outbox.start()
        secrets = open_secrets(settings.secrets)
        # Filters on a logger do not see records from its children; handlers see every record.
        for handler in logging.getLogger().handlers:
            handler.addFilter(RedactingFilter(secrets.redactor))
        metrics = Metrics(service_name=f"modrpc-worker-{self.module}")
        self._admin = start_admin_server(self.host, 0, metrics=metrics, limits=admin_limits(settings.limits))
        self.metrics_address = f"{self.host}:{self._admin.port}"
        # Client spans are made inline by the module client, cheaper than an interceptor.
        pool = InstancePool(
            max_message_bytes=settings.max_message_bytes, lanes=settings.lane, local=self.local, tls=tls
        )
        client = ModuleClient(pool, tracing=ClientTracer(handler_of=handler_id_of))
        self._closers.append(client)
        retention = settings.retention
        audit = open_audit_sink(
            settings.observability,
            store=self.store,
            redact=audit_redactor(secrets.redactor),
            segment_bytes=max(1 << 20, retention.audit_max_bytes // 4),
        )
        dropped = metrics.counter("modrpc_audit_dropped_total", "Audit records dropped: the sink did not keep up.")
        snapshots_dropped = metrics.counter("modrpc_snapshots_dropped_total", "Snapshots that could not be stored.")
        for counter in (dropped, snapshots_dropped):
            counter.add(0)  # listed from the start: a zero is told apart from a missing metric
        observer = AuditObserver(RedMetrics(metrics), manifest_hash="", dropped_counter=dropped)
        self._observer, self._audit = observer, audit
        # Snapshots are written behind the call: a store that is down or hangs must neither fail
        # nor delay the calls whose policy asks for one. What is given up on is logged and counted.
        # Each queued snapshot is on disk too, until the store has it: a worker killed while the
        # store is down leaves them to the next worker of the module.
        snapshots = self._snapshots = WriteBehindSnapshots(
            LogSnapshotStore(self.store),
            on_drop=snapshots_dropped.add,
            spool=SnapshotSpool(Path(settings.data_dir) / "snapshots", self.module),
        )
        snapshots.start()
        deps = WorkerDeps(
            client=client,
            fabric=fabric,
            secrets=secrets,
            metrics=metrics,
            snapshots=snapshots,
            redact=secrets.redact,
            observer=observer,
            config={"module": self.module},
            tracing=ServerTracer(handler_of=handler_id_of),
            outbox=self._outbox,
            client_roles=settings.tls.client_roles,
            snapshot_roles=frozenset(settings.auth.snapshot_roles),
        )
        service = ModuleService.build(loaded, modules_dir=self.modules_dir, deps=deps)
        self.service = service
        records = service.store_records()
        observer.manifest_hash = str(records[-1].manifest.get("content_hash", "")) if records else ""

        # Bounded by grpc core (see runtime.limits); the lane, when on, shares the file budget.
        limits = grpc_server_limits(
            settings.limits, settings.max_message_bytes, servers=2 if settings.lane else 1
        )
        server = grpc.aio.server(
            options=limits.options,
            maximum_concurrent_rpcs=limits.maximum_concurrent_rpcs,
            # No interceptors: each endpoint opens its server span itself (grpc.aio runs an
            # interceptor as an extra coroutine on every call).
        )
        handlers: list[Any] = [service.generic_handler()]
        if settings.playground_on and deps.snapshots is not None:
            # Replays of stored snapshots run here, where the module's code and state are.
            sandbox = Sandbox({self.module: service}, deps.snapshots, hop_timeout=deps.hop_timeout)
            handlers.append(sandbox_handler(sandbox, settings.playground.role))
        if settings.lane:
            # The lane: the same endpoints behind a framed transport, for the gateway and other
            # workers; its address is handed out over gRPC (runtime.lane.WHERE_METHOD).
            self._lane = LaneServer(
                service.transport,
                host=self.host,
                max_message_bytes=settings.max_message_bytes,
                limits=lane_limits(settings.limits, max_connections=limits.max_connections),
                tls=tls,
            )
            await self._lane.start()
            handlers.append(where_handler(lambda: self._lane.address if self._lane is not None else ""))
        server.add_generic_rpc_handlers(tuple(handlers))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        catalogs = {self.module: service.catalog}
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            VersionedReflection(lambda: catalogs, (health.SERVICE_NAME, reflection.SERVICE_NAME)), server
        )
        try:
            bound = server.add_secure_port(f"{self.host}:{self.port}", tls.server_credentials())
            if bound == 0:
                raise OSError(f"cannot listen on {self.host}:{self.port}")
            await server.start()
        except BaseException:
            if self._lane is not None:  # started above: it must not outlive a failed start
                lane, self._lane = self._lane, None
                await lane.stop(0)
            raise
        self._server = server
        self.port = bound
        self.address = f"{self.host}:{bound}"

        directory = WorkerDirectory(self.store, pool, service.dependencies())
        await directory.refresh()
        self._tasks.append(asyncio.create_task(directory.run(), name="modrpc-directory"))
        self._audit_task = asyncio.create_task(self._drain_audit(observer, audit), name="modrpc-audit")
        self._tasks.append(
            asyncio.create_task(_retain(retention, audit, snapshots, metrics), name="modrpc-retention")
        )
        await service.start_subscribers()
        if self.register:
            # What this worker knows of each version replaces what is stored, except the
            # lifecycle's own keys (retired, cold, warm...), which a start must not undo, and
            # the manifest of a version it does not serve: only a worker of that version knows
            # its policies, which the gateway still enforces for that version's callers (the
            # roles of a method a later version removed, say).
            stored = {r.id: r for r in await self.store.list_versions(self.module)}
            for record in records:
                before = stored.get(record.id)
                if before is not None:  # serving again: the module is no longer removed
                    kept = {k: v for k, v in before.metadata.items() if k != REMOVED_KEY}
                    record = dataclasses.replace(record, metadata={**kept, **record.metadata})
                    if record.id != service.served and before.manifest:
                        record = dataclasses.replace(record, manifest=before.manifest)
                await self.store.put_version(self.module, record)
            for label, version in service.catalog.labels.items():
                await self.store.set_label(self.module, label, version)
            await self._register(healthy=True)
            self._tasks.append(asyncio.create_task(self._heartbeat(), name="modrpc-heartbeat"))
        if self.local is not None:
            self.local.register(self.module, service.transport, versions=(service.served,))
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(service_name(self.module), health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "worker %s serving %s %s on %s (metrics on http://%s/metrics)",
            self.worker_id, self.module, service.served, self.address, self.metrics_address,
        )  # fmt: skip
        return self.address

    async def _register(self, *, healthy: bool) -> None:
        from runtime.store import WorkerRecord

        assert self.service is not None and self.store is not None, "registered by start()"
        now = time.time()
        await self.store.register_worker(
            WorkerRecord(
                id=self.worker_id,
                module=self.module,
                address=self.address,
                versions=(self.service.served,),
                healthy=healthy,
                pid=os.getpid(),
                started_at=now,
                last_seen=now,
            )
        )

    async def _heartbeat(self) -> None:
        from runtime.errors import NotFound

        store = self.store
        assert store is not None, "started by start(), after the store"
        failing = False
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                try:
                    await store.heartbeat(self.worker_id)
                except NotFound:  # the record went (a store restored from before, a sweep): again
                    log.warning("worker %s was not registered in the store any more; registering again", self.worker_id)
                    await self._register(healthy=True)
            except Exception as exc:  # the store may be down for a while; keep serving
                if not failing:
                    log.warning("worker %s heartbeat failed (%s); serving on, and trying again", self.worker_id, exc)
                failing = True
                continue
            if failing:
                log.info("worker %s heartbeats again", self.worker_id)
                failing = False

    @staticmethod
    async def _drain_audit(observer: AuditObserver, audit: Any) -> None:
        """Write what piles up, until :meth:`stop` closes the observer and nothing is left.

        Never cancelled mid-write by ``stop`` (a batch taken from ``pending`` would be lost):
        ``stop`` sets ``closing``, wakes it, and waits for it to finish.
        """
        while True:
            await observer.wake.wait()
            await write_audit(audit, observer.take())
            if observer.closing and not observer.pending:
                return

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking calls, drain those in flight for ``grace`` seconds, close. Safe twice."""
        if self._stopped:
            return
        self._stopped = True
        if self.local is not None:
            self.local.unregister(self.module)
        grace = self.settings.drain_seconds if grace is None else grace
        await self._health.enter_graceful_shutdown()
        if self.register and self.store is not None and self.address:
            with contextlib.suppress(Exception):
                await self.store.deregister_worker(self.worker_id)
        stopping = []
        if self._server is not None:
            stopping.append(self._server.stop(grace))
        if self._lane is not None:
            stopping.append(self._lane.stop(grace))
        await asyncio.gather(*stopping)
        await self._await_unwinding()  # before the service closes: undo steps may call modules
        if self.service is not None:
            await self.service.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._flush_audit()
        if self._snapshots is not None:
            await self._snapshots.close(AUDIT_FLUSH_SECONDS)
        if self._outbox is not None:
            await self._outbox.stop(grace)
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                await closer.close()
        if self._admin is not None:
            self._admin.close()
        log.info("worker %s stopped", self.worker_id)

    async def _await_unwinding(self) -> None:
        """Wait (bounded) for calls cancelled at the end of the grace to finish their undo
        steps and cleanup, so that their audit records are written too."""
        observer = self._observer
        if observer is None or not observer.running:
            return
        try:
            async with asyncio.timeout(AUDIT_UNWIND_SECONDS):
                await observer.idle.wait()
        except TimeoutError:
            log.error(
                "worker %s: %d calls were still unwinding %.0fs after the stop; their audit "
                "records are not written", self.worker_id, observer.running, AUDIT_UNWIND_SECONDS,
            )

    async def _flush_audit(self) -> None:
        """Write the audit records left, within a bound, and say what could not be written."""
        observer, task = self._observer, self._audit_task
        if observer is None:
            return
        observer.closing = True
        observer.wake.set()
        if task is None:
            await write_audit(self._audit, observer.take())
            return
        try:
            async with asyncio.timeout(AUDIT_FLUSH_SECONDS):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            log.error(
                "worker %s: the audit sink did not take the last records within %.0fs; about %d "
                "were not written", self.worker_id, AUDIT_FLUSH_SECONDS, len(observer.pending),
            )
        except Exception as exc:  # the drain task itself failed: what it left is written here
            log.error("worker %s: the audit task failed: %s", self.worker_id, exc)
            await write_audit(self._audit, observer.take())

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
