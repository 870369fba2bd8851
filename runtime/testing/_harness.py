"""Calling a module's handlers in process, through the same lifecycle a worker runs.

:class:`ModuleHarness` loads a module folder as a worker does (manifest, registration check,
recorded versions, transformers) and serves its methods through the worker's own endpoints:
version resolution and transformer chains, request validation, before/after/catch hooks,
compensations, response validation, the audit record. Only the sockets are gone, and the
world around the module is fake: other modules are stubs, published events are kept, secrets
and config are what the test says, and the clock stands still until moved.

    harness = ModuleHarness.for_module("orders")
    harness.stub("users", "get_user", lambda req: {"id": req.id, "email": "ada@example.com", ...})
    order = await harness.call("PlaceOrder", {"user_id": "u1", "items": [...]})
    assert harness.published == []
    assert harness.audit[-1].outcome == "ok"

Errors come back exactly as a caller of the real worker would get them: the runtime error of
the status the worker answered with (``InvalidArgument`` with its field violations,
``NotFound``...).
"""

from __future__ import annotations

import typing
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from runtime.client import InstancePool, ModuleClient
from runtime.context import GlobalContext, MethodTarget, ModuleRegistry, encode_payload
from runtime.deadline import Deadline
from runtime.gtype import stream_item
from runtime.identity import PRINCIPAL_HEADER, Peer, Principal, current_peer, principal_header
from runtime.lcc import MemorySnapshotStore
from runtime.manifest import LoadedModule, check_registration, discover_modules, load_module
from runtime.observability import AuditObserver, AuditRecord, Metrics
from runtime.project import find_project
from runtime.secrets import SecretsManager
from runtime.status import REQUEST_ID_KEY, error_of
from runtime.testing._fakes import (
    DictSecrets,
    ManualClock,
    ModuleCall,
    Published,
    RecordingFabric,
    Stub,
    StubModules,
)
from runtime.transport import CallError
from runtime.wire import method_path, pascal, request_message, response_message, snake
from runtime.worker import ModuleService, WorkerDeps, load_catalog

__all__ = ["ModuleHarness"]

_GATEWAY = Peer.gateway()

TEST_PRINCIPAL = Principal(subject="test", roles=(), method="jwt")
"""Who calls when a test does not say: an authenticated caller with no roles.

Roles are the gateway's business (a worker trusts what the gateway forwarded), and the harness
calls as the gateway, so a harness call is not refused for want of one; pass ``principal=`` to
see a particular caller in ``lctx``."""


class ModuleHarness:
    """One module, served in process for a test; see the module docstring.

    ``directory`` is the module's folder. ``modules`` stubs other modules' methods
    (``{"users": {"get_user": fn}}``, or later with :meth:`stub`); ``secrets`` and ``config``
    are what ``gctx.secrets`` and ``gctx.config`` hold; ``clock`` is ``gctx.clock`` (a
    :class:`ManualClock` by default, at 2025-01-01T00:00:00Z).
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        modules: Mapping[str, Mapping[str, Stub]] | None = None,
        secrets: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
        clock: ManualClock | None = None,
    ) -> None:
        directory = Path(directory).resolve()
        loaded = load_module(directory)
        declared = set(loaded.manifest.capabilities.modules)
        # What the worker refuses, the harness refuses: code using what it did not declare.
        check_registration(loaded, {p.name for p in discover_modules(directory.parent)} | declared)
        self.loaded = loaded
        self.name = loaded.name
        self.catalog = load_catalog(loaded)
        self.clock = clock or ManualClock()
        self.fabric = RecordingFabric()
        self.stubs = StubModules()
        for module, methods in (modules or {}).items():
            for method, stub in methods.items():
                self.stub(module, method, stub)
        self.secrets = SecretsManager([DictSecrets(secrets or {})], ttl=0.0)
        self.snapshots = MemorySnapshotStore()
        self.audit: list[AuditRecord] = []
        """The audit record of every call, in order, as the worker writes it."""
        self._metrics = Metrics(service_name=f"modrpc-test-{self.name}")
        self._observer = AuditObserver(None, manifest_hash="")
        caps = loaded.capabilities
        targets = {dep: _targets(loaded if dep == self.name else _sibling(directory, dep)) for dep in sorted(declared)}
        self.gctx = GlobalContext(
            module=self.name,
            capabilities=caps,
            modules=ModuleRegistry(caps, {k: v for k, v in targets.items() if v is not None}, self.stubs),
            config=dict(config or {}),
            fabric=self.fabric,
            secrets=self.secrets,
            metrics=self._metrics,
            versions=self.catalog,
            clock=self.clock,
        )
        deps = WorkerDeps(
            client=ModuleClient(InstancePool()),  # never used: gctx.modules goes to the stubs
            fabric=self.fabric,
            secrets=self.secrets,
            metrics=self._metrics,
            snapshots=self.snapshots,
            redact=self.secrets.redact,
            observer=self._observer,
            config=dict(config or {}),
        )
        self.service = ModuleService(loaded, self.catalog, self.gctx, deps)
        records = self.service.store_records()
        self._observer.manifest_hash = str(records[-1].manifest.get("content_hash", "")) if records else ""
        self._endpoints = self.service.transport
        self._started = False

    @classmethod
    def for_module(cls, name: str, *, project: Path | str | None = None, **fakes: Any) -> ModuleHarness:
        """The module ``name`` of the project at or above ``project`` (default: the working
        directory); ``fakes`` as for the constructor."""
        found = find_project(Path(project) if project is not None else None)
        return cls(found.modules_dir / name, **fakes)

    # -- what the test sees -----------------------------------------------------------------
    @property
    def published(self) -> list[Published]:
        """Every message the module published, in order."""
        return self.fabric.published

    @property
    def module_calls(self) -> list[ModuleCall]:
        """Every call the module made to another module (stubbed or not), in order."""
        return self.stubs.calls

    @property
    def versions(self) -> list[str]:
        """The module's recorded version ids, oldest first; any of them can be called."""
        return [v.id for v in self.catalog.versions]

    def stub(self, module: str, method: str, fn: Stub) -> None:
        """Answer ``gctx.modules.<module>.<method>`` with ``fn`` (method in either case)."""
        self.stubs.add(module, method, fn)

    # -- calling ----------------------------------------------------------------------------
    async def call(
        self,
        method: str,
        request: BaseModel | Mapping[str, Any] | None = None,
        *,
        version: str | None = None,
        principal: Principal | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
        flags: Sequence[str] = (),
        metadata: Sequence[tuple[str, str]] = (),
    ) -> dict[str, Any]:
        """Call ``method`` (``SayHello`` or ``say_hello``) and return its response as a dict.

        ``version`` is what a caller sends as ``x-api-version`` (a label, a version id or a
        date): the request and response then have that version's shape, transformed as the
        worker transforms them. ``timeout`` is the caller's deadline in seconds. A failed call
        raises the runtime error of its status, as a gRPC caller would see it.
        """
        await self._start()
        name = pascal(snake(method))
        resolved = self.catalog.resolve(version)
        wire = self.catalog.wire(resolved)
        data = request.model_dump() if isinstance(request, BaseModel) else dict(request or {})
        payload = wire.encode(request_message(name), data)
        headers: list[tuple[str, str]] = [(PRINCIPAL_HEADER, principal_header(principal or TEST_PRINCIPAL))]
        if version is not None:
            headers.append(("x-api-version", version))
        if request_id is not None:
            headers.append((REQUEST_ID_KEY, request_id))
        if flags:
            headers.append(("x-flags", ",".join(flags)))
        headers.extend(metadata)
        as_gateway = current_peer.set(_GATEWAY)  # what the worker's transport proves, in a deployment
        try:
            response, _ = await self._endpoints.unary(
                method_path(self.name, name), payload, headers, Deadline.from_timeout(timeout)
            )
        except CallError as failed:
            raise error_of(failed.status) from failed
        finally:
            current_peer.reset(as_gateway)
            self.audit.extend(self._observer.take())
        decoded: dict[str, Any] = wire.decode(response_message(name), response)
        return decoded

    async def stream(
        self,
        method: str,
        requests: BaseModel | Mapping[str, Any] | Iterable[BaseModel | Mapping[str, Any]] | AsyncIterable[BaseModel | Mapping[str, Any]],
        *,
        version: str | None = None,
        principal: Principal | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> AsyncIterator[dict[str, Any]]:
        """Call the streaming ``method`` and yield its response messages as dicts, as they come.

        ``requests`` is the one request of a server-streaming method, or the requests (an
        iterable or async iterable) of a client-streaming or bidirectional one. Leaving the
        loop early cancels the call, as a caller hanging up does; the lifecycle's cleanup has
        run by the time the generator is closed.

            async for note in harness.stream("WatchNotifications", {}, timeout=1):
                ...
        """
        await self._start()
        name = pascal(snake(method))
        resolved = self.catalog.resolve(version)
        wire = self.catalog.wire(resolved)
        request_name = request_message(name)

        def encode(request: BaseModel | Mapping[str, Any]) -> bytes:
            data = request.model_dump() if isinstance(request, BaseModel) else dict(request)
            return wire.encode(request_name, data)

        async def payloads() -> AsyncIterator[bytes]:
            if isinstance(requests, BaseModel | Mapping):
                yield encode(requests)
            elif isinstance(requests, AsyncIterable):
                async for request in requests:
                    yield encode(request)
            else:
                for request in requests:
                    yield encode(request)

        headers: list[tuple[str, str | bytes]] = [(PRINCIPAL_HEADER, principal_header(principal or TEST_PRINCIPAL))]
        if version is not None:
            headers.append(("x-api-version", version))
        if request_id is not None:
            headers.append((REQUEST_ID_KEY, request_id))
        headers.extend(metadata)
        as_gateway = current_peer.set(_GATEWAY)  # the stream's task starts now and keeps this
        try:
            call = self._endpoints.stream(method_path(self.name, name), payloads(), headers, Deadline.from_timeout(timeout))
        finally:
            current_peer.reset(as_gateway)
        try:
            async for message in call:
                yield wire.decode(response_message(name), message)
        except CallError as failed:
            raise error_of(failed.status) from failed
        finally:
            await call.aclose()
            self.audit.extend(self._observer.take())

    async def deliver(self, topic: str, event: BaseModel | Mapping[str, Any] | bytes) -> int:
        """Deliver ``event`` on ``topic`` to the module's ``@subscriber`` functions, as the
        fabric would; returns how many received it."""
        await self._start()
        return await self.fabric.deliver(topic, encode_payload(event))

    async def _start(self) -> None:
        if not self._started:
            self._started = True
            await self.service.start_subscribers()

    def close(self) -> None:
        """Drop the subscriptions and the metrics; safe to call twice."""
        self.fabric.subscriptions.clear()
        self._metrics.close()

    async def __aenter__(self) -> ModuleHarness:
        await self._start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


def _sibling(directory: Path, name: str) -> LoadedModule | None:
    """Another module of the same folder, when it is there (its models type the stubs)."""
    folder = directory.parent / name
    return load_module(folder) if (folder / "module.toml").is_file() else None


def _targets(loaded: LoadedModule | None) -> dict[str, MethodTarget] | None:
    if loaded is None:
        return None
    targets = {}
    for spec in loaded.handlers:
        hints = typing.get_type_hints(spec.function)
        targets[spec.method] = MethodTarget(
            module=loaded.name,
            method=spec.method,
            request_type=stream_item(hints[next(iter(hints))])[0],  # type: ignore[arg-type]
            response_type=stream_item(hints["return"])[0],  # type: ignore[arg-type]
            idempotent=loaded.policy(spec.method).idempotent,
            client_streaming=spec.types.client_streaming,
            server_streaming=spec.types.server_streaming,
        )
    return targets
