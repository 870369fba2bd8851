"""One in-memory fabric shared by several processes on one machine: the hub.

``modrpc up`` runs one worker process per module on the embedded defaults. An in-memory fabric
lives inside one process, so the supervisor keeps the only one and serves it on a loopback port
(:class:`FabricHub`); each worker reaches it through :class:`HubFabric` (``hub://127.0.0.1:PORT``).
Every semantic stays the memory fabric's own: at-least-once delivery, groups, redelivery and the
dead-letter topic, exactly-once ids, TTL, priority and backpressure. The hub only carries calls.

Wire form (no .proto: gRPC generic handlers with raw bytes). Every frame is a 4-byte big-endian
length, a JSON header of that length, then the payload bytes:

- ``Publish``: header ``{topic, headers, msg_id, ttl, priority, timeout}``, payload the data;
- ``Subscribe`` (server streaming): header ``{topic, group, max_attempts, ack_wait}``; each
  streamed frame is one delivery ``{delivery, topic, headers, msg_id, attempt}`` + data;
- ``Settle``: header ``{delivery, error}`` — ``error`` null acknowledges, text asks for redelivery.

A subscriber process that goes away (its stream ends) has its in-flight deliveries failed, so
the memory fabric redelivers them to another member: nothing is lost.

The hub is a runtime process like any other: it serves mutual TLS only, with the ``hub``
certificate, and every call is checked against the calling worker's certificate: a
:class:`HubPolicy` decides which topics each module may publish and subscribe to (``modrpc up``
uses the modules' declared capabilities), and a delivery is settled only by the process it was
delivered to. A process without a certificate of the deployment CA cannot even connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import uuid
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Literal, Protocol, Self

import grpc

from runtime.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    ModrpcError,
    PermissionDenied,
    Unavailable,
    status_of,
)
from runtime.fabric._types import (
    Fabric,
    FabricOptions,
    Handler,
    Message,
    Subscription,
    check_group,
    check_publish,
    check_subscribe,
    check_topic,
    describe_error,
    outgoing_headers,
)
from runtime.identity import Peer
from runtime.status import error_of
from runtime.tls import InternalTls, peer_of_grpc
from runtime.transport import TransportError, call_error

__all__ = ["FabricHub", "HubFabric", "HubPolicy"]

log = logging.getLogger("modrpc.fabric.hub")

SERVICE = "modrpc.fabric.v1.Hub"
_SUBSCRIBED = "x-modrpc-subscribed"
_LEN = struct.Struct(">I")


def _frame(header: Mapping[str, Any], data: bytes = b"") -> bytes:
    meta = json.dumps(header, separators=(",", ":")).encode()
    return _LEN.pack(len(meta)) + meta + data


def _unframe(frame: bytes) -> tuple[dict[str, Any], bytes]:
    (size,) = _LEN.unpack_from(frame)
    return json.loads(frame[4 : 4 + size]), frame[4 + size :]


class HubNack(Exception):
    """The remote subscriber failed the delivery; the fabric should redeliver it.

    ``described`` is the subscriber's own ``Type: message``, recorded as is on a dead letter.
    """

    def __init__(self, described: str) -> None:
        super().__init__(described)
        self.described = described


class HubPolicy(Protocol):
    """Which topics a worker may use through the hub; raises ``PermissionDenied`` to refuse."""

    def check(self, peer: Peer, action: Literal["publish", "subscribe"], topic: str) -> None: ...


class FabricHub:
    """Serves ``fabric`` to other processes on ``host:port`` (port 0 picks a free one), over
    mutual TLS with ``tls`` (the hub's identity), to the workers ``policy`` allows."""

    def __init__(
        self, fabric: Fabric, *, tls: InternalTls, policy: HubPolicy, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.fabric = fabric
        self.host = host
        self.port = port
        self.tls = tls
        self.policy = policy
        self._server: grpc.aio.Server | None = None
        self._pending: dict[str, tuple[Peer, asyncio.Future[str | None]]] = {}

    @property
    def url(self) -> str:
        return f"hub://{self.host}:{self.port}"

    async def start(self) -> str:
        server = grpc.aio.server()
        handlers = {
            "Publish": grpc.unary_unary_rpc_method_handler(self._publish),
            "Subscribe": grpc.unary_stream_rpc_method_handler(self._subscribe),
            "Settle": grpc.unary_unary_rpc_method_handler(self._settle),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = server.add_secure_port(f"{self.host}:{self.port}", self.tls.server_credentials())
        await server.start()
        self._server = server
        return self.url

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def _admit(
        self, context: grpc.aio.ServicerContext[bytes, bytes], action: Literal["publish", "subscribe"] | None, topic: str
    ) -> Peer:
        """The calling worker, allowed to ``action`` on ``topic``; aborts the call otherwise."""
        peer = peer_of_grpc(context)
        try:
            if peer is None or peer.kind != "module":
                raise PermissionDenied(f"{peer or 'a caller without an identity'} may not use the fabric hub")
            if action is not None:
                self.policy.check(peer, action, topic)
        except ModrpcError as exc:
            log.warning("fabric hub refused %s %s from %s: %s", action or "settle", topic, peer, exc.message)
            await context.abort(status_of(exc), exc.message)
            raise  # abort raises; never reached
        return peer

    async def _publish(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        header, data = _unframe(request)
        await self._admit(context, "publish", str(header.get("topic", "")))
        try:
            await self.fabric.publish(
                header["topic"],
                data,
                headers=header.get("headers") or None,
                msg_id=header.get("msg_id"),
                ttl=header.get("ttl"),
                priority=header.get("priority", 0),
                timeout=header.get("timeout"),
            )
        except ModrpcError as exc:
            await context.abort(status_of(exc), exc.message)
        return b""

    async def _settle(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        header, _ = _unframe(request)
        peer = await self._admit(context, None, "")
        pending = self._pending.get(header["delivery"])
        if pending is None or pending[0] != peer:  # unknown, or delivered to another worker
            return b""
        future = self._pending.pop(header["delivery"])[1]
        if not future.done():
            future.set_result(header.get("error"))
        return b""

    async def _subscribe(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
        header, _ = _unframe(request)
        peer = await self._admit(context, "subscribe", str(header.get("topic", "")))
        queue: asyncio.Queue[tuple[str, Message]] = asyncio.Queue()
        mine: set[str] = set()

        async def deliver(message: Message) -> None:
            delivery = uuid.uuid4().hex
            future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            self._pending[delivery] = (peer, future)
            mine.add(delivery)
            await queue.put((delivery, message))
            try:
                error = await future
            finally:
                mine.discard(delivery)
                self._pending.pop(delivery, None)
            if error is not None:
                raise HubNack(error)

        try:
            subscription = await self.fabric.subscribe(
                header["topic"],
                deliver,
                group=header.get("group"),
                max_attempts=header.get("max_attempts", 5),
                ack_wait=header.get("ack_wait", 30.0),
            )
        except ModrpcError as exc:
            await context.abort(status_of(exc), exc.message)
            return
        # Told at once, so the subscriber's subscribe() returns only once it is subscribed (and
        # raises the refusal otherwise), rather than at the first delivery.
        await context.send_initial_metadata(((_SUBSCRIBED, "1"),))
        try:
            while True:
                delivery, message = await queue.get()
                yield _frame(
                    {
                        "delivery": delivery,
                        "topic": message.topic,
                        "headers": dict(message.headers),
                        "msg_id": message.msg_id,
                        "attempt": message.attempt,
                    },
                    message.data,
                )
        finally:
            for delivery in list(mine):  # the subscriber went away: let others have these
                pending = self._pending.pop(delivery, None)
                if pending is not None and not pending[1].done():
                    pending[1].set_result("subscriber disconnected")
            await subscription.close()


def _hub_error(exc: grpc.aio.AioRpcError, what: str) -> ModrpcError:
    """The runtime error of a failed hub call. A failure of the transport itself (no hub
    answered) may name the hub's address: its text goes to the log, and the error says what
    failed without it, as a module client's does."""
    error = call_error(exc)
    if not isinstance(error, TransportError):
        return error_of(error.status, relay=False)
    log.warning("%s through the fabric hub failed: %s", what, error.details)
    if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{what} through the queue fabric timed out")
    return Unavailable(f"{what}: the queue fabric could not be reached")


class _HubSubscription:
    """A subscription held open by one streaming call to the hub.

    Closing stops taking deliveries, lets a running handler finish (up to ``drain_timeout``)
    and settles it, then ends the stream; a delivery not settled by then goes back to the topic.
    """

    def __init__(self, topic: str, group: str | None, drain_timeout: float) -> None:
        self._topic = topic
        self._group = group
        self._drain_timeout = drain_timeout
        self.task: asyncio.Task[None] | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        self.closing = False

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def group(self) -> str | None:
        return self._group

    @property
    def closed(self) -> bool:
        return self.closing or self.task is None or self.task.done()

    async def close(self) -> None:
        self.closing = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._drain_timeout):
                await self.idle.wait()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class HubFabric:
    """The :class:`~runtime.fabric.Fabric` of a process that uses a hub's fabric, over mutual TLS
    with ``tls`` (this worker's identity); the hub must prove it is the hub."""

    def __init__(self, url: str, options: FabricOptions | None = None, *, tls: InternalTls | None = None) -> None:
        self.url = url
        self.target = url.removeprefix("hub://").rstrip("/")
        self.options = options or FabricOptions()
        self.tls = tls
        self._channel: grpc.aio.Channel | None = None
        self._subscriptions: list[_HubSubscription] = []
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise FailedPrecondition(f"fabric {self.url} is closed; open a new one")
        if self.tls is None:
            raise FailedPrecondition(
                "the fabric hub serves mutual TLS only: open it with this process's identity (tls=)"
            )
        if self._channel is None:
            self._channel = grpc.aio.secure_channel(
                self.target, self.tls.channel_credentials(), options=self.tls.channel_options(Peer.hub())
            )
            try:
                async with asyncio.timeout(5.0):
                    await self._channel.channel_ready()
            except TimeoutError:
                await self._channel.close(None)
                self._channel = None
                raise Unavailable(f"fabric hub {self.url} cannot be reached") from None

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*(sub.close() for sub in self._subscriptions))
        self._subscriptions.clear()
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _require(self) -> grpc.aio.Channel:
        if self._closed:
            raise FailedPrecondition(f"fabric {self.url} is closed")
        if self._channel is None:
            raise Unavailable(f"fabric hub {self.url} is not started")
        return self._channel

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        msg_id: str | None = None,
        ttl: float | None = None,
        priority: int = 0,
        timeout: float | None = None,
    ) -> None:
        call = self._require().unary_unary(f"/{SERVICE}/Publish", None, None)
        check_topic(topic)
        check_publish(self.options, topic, data, ttl, timeout)
        # Trace context and request id belong to this process's current call: add them here.
        sent = outgoing_headers(headers, self.options.request_id) or {}
        header = {"topic": topic, "headers": sent, "msg_id": msg_id, "ttl": ttl,
                  "priority": priority, "timeout": timeout}  # fmt: skip
        try:
            await call(_frame(header, data), timeout=None if timeout is None else timeout + 1.0)
        except grpc.aio.AioRpcError as exc:
            raise _hub_error(exc, f"publish to {topic!r}") from exc

    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        group: str | None = None,
        max_attempts: int = 5,
        ack_wait: float = 30.0,
    ) -> Subscription:
        channel = self._require()
        check_topic(topic)
        check_group(group)
        check_subscribe(max_attempts, ack_wait)
        stream = channel.unary_stream(f"/{SERVICE}/Subscribe", None, None)
        settle = channel.unary_unary(f"/{SERVICE}/Settle", None, None)
        call = stream(_frame({"topic": topic, "group": group, "max_attempts": max_attempts, "ack_wait": ack_wait}))
        try:
            subscribed = dict(await call.initial_metadata() or ())
            if _SUBSCRIBED not in subscribed:  # refused (or failed) before it began: say why
                code, details = await call.code(), await call.details()
                raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), await call.trailing_metadata(), details, None)
        except grpc.aio.AioRpcError as exc:
            call.cancel()
            raise _hub_error(exc, f"subscribing to {topic!r}") from exc

        sub = _HubSubscription(topic, group, self.options.drain_timeout)

        async def consume() -> None:
            try:
                async for frame in call:
                    if sub.closing:
                        break  # not handled: the hub redelivers it once this stream ends
                    sub.idle.clear()
                    header, data = _unframe(frame)
                    message = Message(
                        topic=header["topic"], data=data, headers=header.get("headers") or {},
                        msg_id=header.get("msg_id"), attempt=header.get("attempt", 1),
                    )  # fmt: skip
                    error: str | None = None
                    try:
                        await handler(message)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        error = describe_error(exc)
                    try:
                        await settle(_frame({"delivery": header["delivery"], "error": error}))
                    finally:
                        sub.idle.set()
                    if sub.closing:
                        break
                call.cancel()
            except asyncio.CancelledError:
                call.cancel()
                raise
            except grpc.aio.AioRpcError as exc:
                log.error("subscription to %s through %s ended: %s", topic, self.url, exc.details())

        sub.task = asyncio.create_task(consume(), name=f"modrpc-hub-{topic}")
        self._subscriptions.append(sub)
        return sub
