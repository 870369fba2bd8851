"""``gctx``: the one per-process context a handler receives, every access capability-checked."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from runtime.context._clock import Clock, SystemClock
from runtime.context._config import ReadOnlyConfig
from runtime.context._modules import ModuleInvoker, ModuleRegistry
from runtime.deadline import Deadline
from runtime.errors import FailedPrecondition
from runtime.identity import Principal
from runtime.lcc import current_context
from runtime.manifest import CapabilitySet
from runtime.observability import request_id_var

if TYPE_CHECKING:  # the fabric's backends are imported only where one is opened
    from runtime.fabric import Fabric, Message, OutboxBatch, OutboxRelay, Subscription

__all__ = [
    "GlobalContext",
    "SecretSource",
    "current_batch",
    "current_deadline",
    "current_principal",
    "current_request_id",
    "encode_payload",
]

current_request_id = request_id_var
"""The request id of the call being handled (the one the JSON logs show); published messages and
module calls carry it."""
current_deadline: ContextVar[Deadline | None] = ContextVar("modrpc_current_deadline", default=None)
"""The deadline of the call being handled; publishes and module calls never outlive it."""
current_principal: ContextVar[Principal | None] = ContextVar("modrpc_current_principal", default=None)
"""Whom the call being served acts for: what a module's own calls to other modules carry on as
the original caller. None outside a call (a subscriber, startup): the module acts for itself."""
current_batch: ContextVar[OutboxBatch | None] = ContextVar("modrpc_current_batch", default=None)
"""The messages the call being handled has published so far (its outbox batch)."""


class SecretSource(Protocol):
    """What ``gctx.secrets`` needs from the secrets manager."""

    async def get(self, name: str) -> Any: ...


class _ScopedSecrets:
    """``gctx.secrets``: the secrets manager, narrowed to the secrets the module declared."""

    def __init__(self, caps: CapabilitySet, source: SecretSource | None) -> None:
        self._caps = caps
        self._source = source

    async def get(self, name: str) -> Any:
        self._caps.require_secret(name)
        if self._source is None:
            raise FailedPrecondition(f"no secrets provider is configured (asked for {name!r})")
        return await self._source.get(name)


def encode_payload(payload: BaseModel | Mapping[str, Any] | bytes) -> bytes:
    """Messages on the fabric are JSON: a model dumps itself, a mapping is dumped, bytes pass."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    return json.dumps(dict(payload), separators=(",", ":"), default=str).encode()


def _payload_json(data: bytes) -> Any:
    """A published payload as the snapshot keeps it: the JSON it is, else its text."""
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


class GlobalContext:
    """One per process: module clients, read-only config, secrets, metrics, topics, versions.

    >>> async def create_user(req, lctx, gctx):                     # doctest: +SKIP
    ...     await gctx.publish("users.created", user)               # needs publish capability
    ...     stock = await gctx.modules.inventory.reserve(...)       # needs modules capability
    """

    def __init__(
        self,
        *,
        module: str,
        capabilities: CapabilitySet,
        modules: ModuleRegistry,
        config: Mapping[str, Any] | None = None,
        fabric: Fabric | None = None,
        secrets: SecretSource | None = None,
        metrics: Any = None,
        versions: Any = None,
        clock: Clock | None = None,
        outbox: OutboxRelay | None = None,
    ) -> None:
        self.module = module
        self._outbox = outbox
        self._caps = capabilities
        self._modules = modules
        self._config = ReadOnlyConfig(config or {})
        self._fabric = fabric
        self._secrets = _ScopedSecrets(capabilities, secrets)
        self._metrics = metrics
        self._versions = versions
        self._clock = clock or SystemClock()

    @property
    def clock(self) -> Clock:
        """The wall clock (``gctx.clock.now()``); a test harness can set and move it."""
        return self._clock

    @property
    def capabilities(self) -> CapabilitySet:
        return self._caps

    def sandboxed(self, invoke: ModuleInvoker, fabric: Fabric | None) -> GlobalContext:
        """This context with module calls sent through ``invoke`` and publishes to ``fabric``.

        Config, secrets, metrics, versions and every capability check stay as they are. A replay
        runs in one, so that by default it reaches no other module and publishes nothing.
        """
        twin = GlobalContext.__new__(GlobalContext)
        twin.__dict__.update(self.__dict__)
        twin._modules = self._modules.rebound(invoke)
        twin._fabric = fabric
        return twin

    @property
    def modules(self) -> ModuleRegistry:
        """A typed client for every declared module; others raise PERMISSION_DENIED."""
        return self._modules

    @property
    def config(self) -> ReadOnlyConfig:
        """Read-only; any attempt to change it raises ``TypeError``."""
        return self._config

    @property
    def secrets(self) -> _ScopedSecrets:
        return self._secrets

    @property
    def metrics(self) -> Any:
        """Counters, gauges and histograms (``runtime.observability.Metrics``)."""
        return self._metrics

    @property
    def versions(self) -> Any:
        """Version resolution queries for the modules of this deployment."""
        return self._versions

    def _fabric_or_fail(self, topic: str) -> Fabric:
        if self._fabric is None:
            raise FailedPrecondition(f"no queue fabric is configured (topic {topic!r})")
        return self._fabric

    async def publish(
        self,
        topic: str,
        payload: BaseModel | Mapping[str, Any] | bytes,
        *,
        msg_id: str | None = None,
        ttl: float | None = None,
        priority: int = 0,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish to a global topic; durable, not lost to a fabric that is down.

        In a worker the message goes through the outbox (:mod:`runtime.fabric`'s
        ``OutboxRelay``): during a call it is checked now and kept with the call, committed when
        the handler succeeds (with the module's own write, when it passes :meth:`outbox` to its
        database, or else to the worker's local outbox before the response is sent) and dropped
        when it fails; outside a call it is committed at once. The relay publishes it when the
        fabric takes it, at least once, with ``msg_id`` (or a fresh id) for deduplication.
        Backpressure: a full outbox raises RESOURCE_EXHAUSTED.

        Without an outbox (a context built by hand) it is published at once, waiting at most
        until the request's deadline: a full fabric raises RESOURCE_EXHAUSTED or, when waiting
        outlasts the deadline, DEADLINE_EXCEEDED, which fails the request cleanly.
        """
        self._caps.require_publish(topic)
        self._fabric_or_fail(topic)
        out = dict(headers or {})
        request_id = current_request_id.get()
        if request_id:
            out.setdefault("x-request-id", request_id)
        data = encode_payload(payload)
        lctx = current_context()
        started = time.perf_counter()
        try:
            await self._send(topic, data, out, msg_id=msg_id, ttl=ttl, priority=priority, timeout=timeout)
        except BaseException as exc:
            if lctx is not None:
                lctx.record_effect("publish", topic, _payload_json(data), started=started, error=exc)
            raise
        if lctx is not None:  # an event with its duration, and the payload for the snapshot
            lctx.record_effect("publish", topic, _payload_json(data), started=started)

    async def _send(
        self, topic: str, data: bytes, headers: dict[str, str], *, msg_id: str | None, ttl: float | None,
        priority: int, timeout: float | None,
    ) -> None:  # fmt: skip
        """Stage the message with the call, commit it to the outbox, or (a context built by hand,
        outside a call) publish it at once within the request's deadline."""
        fabric = self._fabric_or_fail(topic)
        batch = current_batch.get()
        outbox = self._outbox
        if batch is not None or outbox is not None:
            from runtime.fabric import OutgoingMessage

            message = OutgoingMessage.build(
                topic, data, headers=headers, msg_id=msg_id, ttl=ttl, priority=priority,
                options=getattr(outbox or fabric, "options", None), with_id=outbox is not None,
            )  # fmt: skip
            if batch is not None:
                batch.add(message)
            elif outbox is not None:
                await outbox.put([message])
            return
        deadline = current_deadline.get()
        if deadline is not None:
            timeout = deadline.remaining() if timeout is None else min(timeout, deadline.remaining())
        await fabric.publish(topic, data, headers=headers, msg_id=msg_id, ttl=ttl, priority=priority, timeout=timeout)

    def outbox(self) -> OutboxBatch:
        """The messages the current call has published: pass it to the module's own database
        code, which calls its ``write(db)`` inside the transaction of its write, so that the
        write and its events commit together (see ``runtime.fabric.OutboxBatch``).

        Raises FAILED_PRECONDITION outside a call.
        """
        batch = current_batch.get()
        if batch is None:
            raise FailedPrecondition("gctx.outbox() is only available while a handler runs")
        return batch

    def begin_call(self) -> OutboxBatch | None:
        """A fresh outbox batch for one call (None without a fabric): set it as
        :data:`current_batch` while the handler runs, and :meth:`commit` it when it succeeds."""
        if self._fabric is None:
            return None
        from runtime.fabric import OutboxBatch

        return OutboxBatch(self._outbox)

    async def commit(self, batch: OutboxBatch, deadline: Deadline | None = None) -> None:
        """Make a succeeded call's messages durable (or, without an outbox, publish them within
        ``deadline``) before its response goes out."""
        if self._outbox is not None:
            await self._outbox.commit(batch)
            return
        fabric = self._fabric_or_fail("(outbox)")
        for message in batch.unwritten():
            await fabric.publish(
                message.topic, message.data, headers=message.headers, msg_id=message.msg_id, ttl=message.ttl,
                priority=message.priority, timeout=None if deadline is None else deadline.remaining(),
            )  # fmt: skip

    async def subscribe(
        self,
        topic: str,
        handler: Callable[[Message], Awaitable[None]],
        *,
        group: str | None = None,
        max_attempts: int = 5,
        ack_wait: float = 30.0,
    ) -> Subscription:
        """Subscribe to a global topic; ``group`` makes the members of one group compete."""
        self._caps.require_subscribe(topic)
        fabric = self._fabric_or_fail(topic)
        return await fabric.subscribe(topic, handler, group=group, max_attempts=max_attempts, ack_wait=ack_wait)
