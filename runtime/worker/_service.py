"""A module made servable: endpoints, its GlobalContext, module clients and subscribers."""

from __future__ import annotations

import json
import logging
import typing
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from pydantic import TypeAdapter

from runtime.client import ModuleClient, RetryPolicy
from runtime.context import (
    GlobalContext,
    MethodTarget,
    ModuleRegistry,
    current_batch,
    current_deadline,
    current_principal,
    current_request_id,
    subscriber_mark,
)
from runtime.deadline import Deadline
from runtime.errors import FailedPrecondition, Unimplemented
from runtime.fabric import OutboxRelay
from runtime.gtype import stream_item
from runtime.identity import PRINCIPAL_HEADER, Principal, principal_header
from runtime.lcc import HookSpec, SnapshotStore
from runtime.manifest import (
    LoadedModule,
    ResolvedHook,
    build_manifests,
    discover_modules,
    load_manifest,
    load_module,
)
from runtime.observability import ServerTracer
from runtime.status import REQUEST_ID_KEY, rpc_status_of
from runtime.transport import (
    CallError,
    FailedStream,
    MetadataIn,
    Reply,
    StreamCall,
    stream_handler,
    unary_handler,
)
from runtime.versions import VersionCatalog, encode_descriptor
from runtime.wire import method_path, request_message, response_message, service_name
from runtime.worker._admission import Admission
from runtime.worker._endpoint import CallObserver, MethodEndpoint, RemovedMethod

if TYPE_CHECKING:
    from runtime.fabric import Fabric
    from runtime.secrets import SecretsManager

__all__ = ["ModuleEndpoints", "ModuleService", "RemoteInvoker", "WorkerDeps", "load_catalog"]

log = logging.getLogger("modrpc.worker")


@dataclass
class WorkerDeps:
    """What one worker process shares between the modules it serves."""

    client: ModuleClient
    fabric: Fabric | None = None
    secrets: SecretsManager | None = None
    metrics: Any = None
    snapshots: SnapshotStore | None = None
    redact: Callable[[Any], Any] | None = None
    observer: CallObserver | None = None
    config: Mapping[str, Any] | None = None
    hop_timeout: float = 0.25
    tracing: ServerTracer | None = None
    """Opens each call's server span; the default uses the global tracer provider."""
    outbox: OutboxRelay | None = None
    """Where handlers' events are committed and relayed from; None publishes them at once."""
    client_roles: Mapping[str, tuple[str, ...]] | None = None
    """Roles of client-certificate principals calling the worker directly (``tls.client_roles``)."""
    snapshot_roles: frozenset[str] | None = None
    """Roles that may ask for a snapshot with ``x-flags: snapshot`` (``auth.snapshot_roles``),
    checked against the principal each call acts for; None checks nothing (the test harness,
    which calls as a gateway that has checked)."""


def callers_of(module: str, modules_dir: Path) -> frozenset[str]:
    """The modules of the project whose ``capabilities.modules`` name ``module``.

    Read from the project's own ``module.toml`` files, which every host of a deployment runs
    from, not from the manifest store, where a worker writes its own manifest.
    """
    return frozenset(
        path.name
        for path in discover_modules(modules_dir)
        if module in load_manifest(path / "module.toml").capabilities.modules
    )


def load_catalog(loaded: LoadedModule) -> VersionCatalog:
    """The module's recorded versions, refusing code that changed since the last one."""
    catalog = VersionCatalog.from_module_dir(loaded.name, loaded.directory, dict(loaded.manifest.versions))
    if catalog.latest.schema.fingerprint() != loaded.schema.fingerprint():
        raise FailedPrecondition(
            f"module {loaded.name}: the handler code's schema differs from its latest recorded "
            f"version {catalog.latest.id}; run `modrpc gen` to record it"
        )
    return catalog


class RemoteInvoker:
    """``gctx.modules.X.method(req)``: encode, call the module's worker, decode. Typed both ways."""

    def __init__(
        self,
        client: ModuleClient,
        catalogs: Mapping[str, VersionCatalog],
        caller: str,
        retries: Mapping[tuple[str, str], RetryPolicy] | None = None,
    ) -> None:
        self._client = client
        self._catalogs = catalogs
        self._caller = caller
        self._retries = retries or {}
        """(module, method) → the retry policy the callee's ``module.toml`` declares."""
        self._itself = Principal(subject=f"module:{caller}", method="internal")
        self._adapters: dict[type[Any], TypeAdapter[Any]] = {}

    def _adapter(self, t: type[Any]) -> TypeAdapter[Any]:
        adapter = self._adapters.get(t)
        if adapter is None:
            adapter = self._adapters[t] = TypeAdapter(t)
        return adapter

    def _metadata(self, version: str) -> list[tuple[str, str | bytes]]:
        """What an inner call carries: the version it is encoded at, whom it is for, and the
        request id of the call it is made for.

        Whom it is for: the caller of the call being served, carried on; with none (a
        subscriber, startup) the module acts for itself. Which module calls is not said here:
        the callee reads it from this worker's certificate.
        """
        metadata: list[tuple[str, str | bytes]] = [
            ("x-api-version", version),
            (PRINCIPAL_HEADER, principal_header(current_principal.get() or self._itself)),
        ]
        request_id = current_request_id.get()
        if request_id:
            metadata.append((REQUEST_ID_KEY, request_id))
        return metadata

    async def stream(self, target: MethodTarget, requests: AsyncIterable[Any]) -> AsyncIterator[Any]:
        """A streaming call to another module: models in, models out, each message on its own.
        The deadline and identity are carried exactly as for a unary call."""
        catalog = self._catalogs[target.module]
        version = catalog.latest.id
        wire = catalog.wire(version)
        request_adapter = self._adapter(target.request_type)
        response_adapter = self._adapter(target.response_type)
        name, answer = request_message(target.method), response_message(target.method)

        async def encoded() -> AsyncIterator[bytes]:
            async for request in requests:
                yield wire.encode(name, request_adapter.dump_python(request))

        stream = self._client.stream(
            target.module,
            method_path(target.module, target.method),
            encoded(),
            metadata=self._metadata(version),
            deadline=current_deadline.get(),
            idempotent=target.idempotent,
            retry=self._retries.get((target.module, target.method)),
        )
        try:
            async for payload in stream:
                yield response_adapter.validate_python(wire.decode(answer, payload))
        finally:
            await stream.aclose()

    async def __call__(self, target: MethodTarget, request: Any) -> Any:
        catalog = self._catalogs[target.module]
        version = catalog.latest.id
        wire = catalog.wire(version)
        payload = wire.encode(
            request_message(target.method), self._adapter(target.request_type).dump_python(request)
        )
        metadata = self._metadata(version)
        response, _ = await self._client.call(
            target.module,
            method_path(target.module, target.method),
            payload,
            metadata=metadata,
            deadline=current_deadline.get(),
            idempotent=target.idempotent,
            retry=self._retries.get((target.module, target.method)),
        )
        data = wire.decode(response_message(target.method), response)
        return self._adapter(target.response_type).validate_python(data)


def _hook_spec(hook: ResolvedHook) -> HookSpec:
    return HookSpec(
        id=hook.id,
        phase=hook.phase,
        level=hook.level,
        fn=hook.function,
        timeout=hook.decl.timeout,
        retries=hook.decl.retries,
        source=f"{hook.file}:{hook.line}",
    )


class ModuleEndpoints:
    """A module's endpoints by method path: the module itself as a
    :class:`~runtime.transport.Transport`, which the lane serves and in-process callers call."""

    __slots__ = ("_by_path",)

    def __init__(self, endpoints: Mapping[str, MethodEndpoint | RemovedMethod]) -> None:
        self._by_path = {endpoint.path: endpoint for endpoint in endpoints.values()}

    async def unary(self, method: str, payload: bytes, metadata: MetadataIn, deadline: Deadline | None) -> Reply:
        endpoint = self._by_path.get(method)
        if endpoint is None or endpoint.client_streaming or endpoint.server_streaming:
            raise CallError(rpc_status_of(_not_served(method, endpoint)))
        return await endpoint.serve(payload, metadata, deadline)

    def stream(
        self, method: str, requests: AsyncIterable[bytes], metadata: MetadataIn, deadline: Deadline | None
    ) -> StreamCall:
        endpoint = self._by_path.get(method)
        if endpoint is None or not (endpoint.client_streaming or endpoint.server_streaming):
            return FailedStream(CallError(rpc_status_of(_not_served(method, endpoint))))
        return endpoint.stream(requests, metadata, deadline)


def _not_served(method: str, endpoint: MethodEndpoint | RemovedMethod | None) -> Unimplemented:
    """What grpc answers for a method no handler serves, or one called as the wrong kind of call."""
    if endpoint is None:
        return Unimplemented(f"method {method} is not served here")
    kind = "a streaming" if endpoint.client_streaming or endpoint.server_streaming else "a unary"
    return Unimplemented(f"method {method} is {kind} method here, and was called as the other kind")


class ModuleService:
    """One module's served methods, its ``gctx``, and its fabric subscribers."""

    def __init__(
        self,
        loaded: LoadedModule,
        catalog: VersionCatalog,
        gctx: GlobalContext,
        deps: WorkerDeps,
        callers: frozenset[str] = frozenset(),
        reread_callers: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        self.loaded = loaded
        self.name = loaded.name
        self.catalog = catalog
        self.served = catalog.latest.id
        self.gctx = gctx
        self.deps = deps
        self.endpoints: dict[str, MethodEndpoint] = {}
        self.admission = Admission(self.name, callers, deps.client_roles, reread_callers)
        for spec in loaded.handlers:
            hooks = [_hook_spec(h) for h in loaded.hooks_for(spec.method)]
            self.endpoints[spec.method] = MethodEndpoint(
                module=self.name,
                spec=spec,
                policy=loaded.policy(spec.method),
                catalog=catalog,
                served=self.served,
                gctx=gctx,
                hooks=hooks,
                snapshots=deps.snapshots,
                redact=deps.redact,
                observer=deps.observer,
                hop_timeout=deps.hop_timeout,
                admission=self.admission,
                tracing=deps.tracing,
                snapshot_roles=deps.snapshot_roles,
            )
        # Methods earlier versions had and the served one removed: their callers hear which
        # version removed them, whichever transport they came by.
        self.removed: dict[str, RemovedMethod] = {
            method: RemovedMethod(
                module=self.name, method=method, catalog=catalog, served=self.served, admission=self.admission
            )
            for method in sorted({m.name for v in catalog.versions for m in v.schema.methods})
            if method not in self.endpoints
        }
        self.transport = ModuleEndpoints({**self.endpoints, **self.removed})
        """The endpoints as one transport: what the lane and in-process callers reach."""
        self._subscriptions: list[Any] = []

    @classmethod
    def build(cls, loaded: LoadedModule, *, modules_dir: Path, deps: WorkerDeps) -> ModuleService:
        catalog = load_catalog(loaded)
        targets: dict[str, dict[str, MethodTarget]] = {}
        catalogs: dict[str, VersionCatalog] = {}
        retries: dict[tuple[str, str], RetryPolicy] = {}
        for dep in sorted(loaded.manifest.capabilities.modules):
            dep_loaded = loaded if dep == loaded.name else load_module(modules_dir / dep)
            catalogs[dep] = catalog if dep == loaded.name else load_catalog(dep_loaded)
            targets[dep] = {
                spec.method: MethodTarget(
                    module=dep,
                    method=spec.method,
                    request_type=_param_types(spec.function)[0],
                    response_type=_param_types(spec.function)[1],
                    idempotent=dep_loaded.policy(spec.method).idempotent,
                    client_streaming=spec.types.client_streaming,
                    server_streaming=spec.types.server_streaming,
                )
                for spec in dep_loaded.handlers
            }
            for spec in dep_loaded.handlers:
                retries[dep, spec.method] = RetryPolicy.from_manifest(dep_loaded.policy(spec.method).retry)
        caps = loaded.capabilities
        gctx = GlobalContext(
            module=loaded.name,
            capabilities=caps,
            modules=ModuleRegistry(caps, targets, RemoteInvoker(deps.client, catalogs, loaded.name, retries)),
            config=deps.config,
            fabric=deps.fabric,
            secrets=deps.secrets,
            metrics=deps.metrics,
            versions=catalog,
            outbox=deps.outbox,
        )
        return cls(
            loaded, catalog, gctx, deps, callers_of(loaded.name, modules_dir),
            reread_callers=lambda: callers_of(loaded.name, modules_dir),
        )  # fmt: skip

    def dependencies(self) -> list[str]:
        return sorted(m for m in self.loaded.manifest.capabilities.modules if m != self.name)

    def generic_handler(self) -> grpc.GenericRpcHandler[bytes, bytes]:
        endpoints: dict[str, MethodEndpoint | RemovedMethod] = {**self.endpoints, **self.removed}
        handlers = {
            method: (
                stream_handler(endpoint.stream)
                if endpoint.client_streaming or endpoint.server_streaming
                else unary_handler(endpoint.serve)
            )
            for method, endpoint in endpoints.items()
        }
        return grpc.method_handlers_generic_handler(service_name(self.name), handlers)

    def store_records(self) -> list[Any]:
        """The version records this worker publishes to the manifest store for gateways."""
        from runtime.store import VersionRecord

        manifest = build_manifests(self.loaded, version=self.served).to_json()
        labels_of: dict[str, list[str]] = {}
        for label, version in self.catalog.labels.items():
            labels_of.setdefault(version, []).append(label)
        records = []
        for info in self.catalog.versions:
            records.append(
                VersionRecord(
                    id=info.id,
                    created_at=info.created_at,
                    schema=info.schema.to_json(),
                    fingerprint=info.schema.fingerprint(),
                    manifest=manifest,
                    labels=tuple(labels_of.get(info.id, ())),
                    breaking=info.breaking,
                    parent=info.parent,
                    transformers={"source": info.transformer_source} if info.transformer_source else {},
                    metadata={"descriptor": encode_descriptor(info.descriptor)},
                )
            )
        return records

    async def start_subscribers(self) -> None:
        """Subscribe every ``@subscriber`` function of the module's handlers file."""
        module = self.loaded.handlers_module
        for name in sorted(vars(module)):
            fn = getattr(module, name)
            mark = subscriber_mark(fn)
            if mark is None:
                continue
            event_type = next(iter(typing.get_type_hints(fn).values()))
            adapter: TypeAdapter[Any] = TypeAdapter(event_type)
            self._subscriptions.append(
                await self.gctx.subscribe(
                    mark.topic, _deliver(fn, adapter, self.gctx), group=mark.group, max_attempts=mark.max_attempts
                )
            )
            log.info("module %s subscribed %s to %s", self.name, name, mark.topic)

    async def close(self) -> None:
        for sub in self._subscriptions:
            await sub.close()
        self._subscriptions.clear()


def _param_types(fn: Callable[..., Any]) -> tuple[type[Any], type[Any]]:
    """A handler's request and response message types (a stream's item types, for a stream)."""
    hints = typing.get_type_hints(fn)
    first = next(iter(hints))
    request: type[Any] = stream_item(hints[first])[0]  # type: ignore[assignment]
    response: type[Any] = stream_item(hints["return"])[0]  # type: ignore[assignment]
    return request, response


def _deliver(fn: Callable[..., Any], adapter: TypeAdapter[Any], gctx: GlobalContext) -> Callable[[Any], Any]:
    """A subscriber as the fabric calls it. What it publishes is kept with the delivery, as a
    handler's is with its call: committed when it returns (with its own write when it passes
    ``gctx.outbox()`` to its database, or to the worker's outbox), before the delivery is
    acknowledged, and dropped when it fails (the fabric delivers the event again)."""

    async def on_message(message: Any) -> None:
        event = adapter.validate_python(json.loads(message.data))
        batch = gctx.begin_call()
        token = current_request_id.set(message.request_id)
        batch_token = current_batch.set(batch)
        try:
            await fn(event, gctx)
        finally:
            current_request_id.reset(token)
            current_batch.reset(batch_token)
        if batch is not None and batch.messages:
            await gctx.commit(batch)

    return on_message


def served_versions(services: Sequence[ModuleService]) -> dict[str, str]:
    return {s.name: s.served for s in services}
