"""The NATS JetStream fabric (``nats://host:port``): the distributed backend.

How the contract maps onto JetStream, and why:

* **One stream per topic**, named ``<prefix>_<topic>_<hash>`` on subject ``<prefix>.<topic>``,
  created on first use. Capacity is per topic, and JetStream enforces limits per stream, so the
  server itself refuses a publish when a topic is full and every publisher on every host sees
  the same limit. ``prefix`` (option) isolates deployments and test runs.
* **Interest retention**: a message stays until every consumer has acknowledged it, and a
  publish with no consumer is dropped, exactly like the memory backend. Dead-letter topics
  (``dlq.*``) use limits retention instead (keep the newest ``capacity``), so dead letters
  survive with nobody listening, and a group that subscribes later reads them from the start.
* **Groups** are durable pull consumers (one per group, shared by its members, which compete);
  an ungrouped subscriber gets an ephemeral consumer that is deleted when it closes. New
  consumers start at new messages. A consumer that already exists keeps its configuration.
* **Attempts and dead letters**: the attempt number is JetStream's delivery count. The server
  is told to redeliver forever (``max_deliver=-1``) and the fabric decides when to give up, so
  it can publish the dead letter with the error text before acknowledging the original.
  nats-server 2.9 now and then reports a redelivery with the count still at 1 (seen when the
  first delivery raced a pull request expiring), so on NATS ``attempt`` can lag by one and a
  poison message can get one attempt more than ``max_attempts``. Nothing is lost by it.
* **Backpressure**: streams have ``max_msgs=capacity`` and ``discard=new``; the server's refusal
  becomes ``ResourceExhausted`` (``refuse``), or is retried with backoff for up to ``max_wait``
  (``wait``). The check is on the server, not a client-side count, because publishers on other
  hosts fill the same stream.
* **Exactly-once publish** uses ``Nats-Msg-Id`` and the stream's duplicate window
  (``dedup_window``; 0 means the server's default of two minutes).
* **TTL**: the servers this runs against (2.9.10 on the development and CI machines) predate
  per-message TTL (``Nats-TTL``, 2.11+), so a message with a TTL carries ``modrpc-expires-at``
  (wall-clock unix seconds) and a consumer drops it, acknowledged and unseen, if its first
  delivery starts after that. Until then it still counts against capacity.
* **Priority is not supported**: JetStream delivers in stream order. ``priority`` is accepted so
  code runs unchanged on both backends, and ignored.
* **Connections** reconnect automatically (nats-py); disconnects and reconnects are logged.
  While disconnected, publishing fails at once with ``Unavailable`` rather than being buffered
  for later, so that error means the message was not sent. A publish that times out waiting
  for the server's ack may still have been stored: give it a ``msg_id`` to make a retry safe.
  Every nats exception is translated to a runtime error in :func:`translate`, and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Mapping
from types import MappingProxyType
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from opentelemetry import context as otel_context

from runtime.config import mask_url
from runtime.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    ModrpcError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from runtime.fabric._naming import consumer_name, stream_name, subject
from runtime.fabric._types import (
    EMPTY_HEADERS,
    Handler,
    Lifecycle,
    Message,
    NatsOptions,
    check_group,
    check_msg_id,
    check_publish,
    check_subscribe,
    check_topic,
    dead_letter_headers,
    dead_letter_topic,
    describe_error,
    is_dead_letter_topic,
    outgoing_headers,
)
from runtime.fabric._worker import Worker

__all__ = ["NatsFabric", "NatsSubscription", "translate"]

log = logging.getLogger("modrpc.fabric")

MSG_ID_HEADER = "Nats-Msg-Id"
EXPIRES_HEADER = "modrpc-expires-at"
_FULL = frozenset({10077, 10078, 10047})
"""JetStream error codes for a full stream: max messages, max bytes, insufficient resources."""
_STREAM_EXISTS = 10058
"""A stream of that name exists with another configuration (another host created it)."""
_UNREACHABLE = (
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.AuthorizationError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    OSError,
)


def translate(exc: BaseException, *, doing: str, where: str, deadline: bool = False) -> ModrpcError:
    """The runtime error for a nats exception raised while ``doing`` something at ``where``.

    ``deadline`` says whether the caller set the timeout, which decides whether running out of
    time is the caller's ``DeadlineExceeded`` or the server being ``Unavailable``.
    """
    if isinstance(exc, ModrpcError):
        return exc
    detail = getattr(exc, "description", None) or str(exc) or type(exc).__name__
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code in _FULL:
        return ResourceExhausted(f"NATS refused to {doing}: {detail}")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return ResourceExhausted(f"cannot {doing}: the message exceeds the server's max payload")
    if isinstance(exc, TimeoutError):  # nats.errors.TimeoutError is one too
        if deadline:
            return DeadlineExceeded(f"timed out trying to {doing}")
        return Unavailable(f"NATS at {where} did not answer in time to {doing}")
    if isinstance(exc, _UNREACHABLE):
        return Unavailable(f"cannot {doing}: NATS at {where} is unavailable ({detail})")
    if isinstance(exc, nats.js.errors.NotFoundError):
        return NotFound(f"cannot {doing}: {detail}")
    if isinstance(exc, nats.errors.BadSubjectError | nats.errors.BadHeaderError):
        return InvalidArgument(f"cannot {doing}: {detail}")
    return InternalError(f"NATS failed to {doing}: {type(exc).__name__}: {detail}")


class NatsFabric(Lifecycle):
    """The fabric on NATS JetStream. See the module docstring for how it maps the contract.

    >>> async def example() -> None:
    ...     async with NatsFabric("nats://127.0.0.1:4222", NatsOptions(prefix="demo")) as fabric:
    ...         await fabric.publish("greetings", b"hello")
    """

    def __init__(self, url: str, options: NatsOptions | None = None, *, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self._servers = [server.strip() for server in url.split(",") if server.strip()]
        if not self._servers:
            raise InvalidArgument("a NATS fabric URL needs at least one server")
        self._where = mask_url(url)
        self._options = options or NatsOptions()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._streams: dict[str, str] = {}
        self._subs: set[NatsSubscription] = set()
        self._closed = False

    @property
    def options(self) -> NatsOptions:
        return self._options

    @property
    def where(self) -> str:
        """The server URL with any password masked."""
        return self._where

    async def start(self) -> None:
        if self._closed:
            raise FailedPrecondition("the NATS fabric is closed; open a new one")
        if self._nc is not None:
            return
        nc = Client()
        failures: deque[BaseException] = deque(maxlen=1)  # the latest is what explains it

        async def on_error(exc: Exception) -> None:
            failures.append(exc)
            log.warning("NATS error at %s: %s", self._where, exc or type(exc).__name__)

        async def on_disconnect() -> None:
            if self._closed:
                return  # our own close, not an outage
            log.warning("lost the connection to NATS at %s; reconnecting", self._where)

        async def on_reconnect() -> None:
            log.info("reconnected to NATS at %s", self._where)

        timeout = self._options.connect_timeout
        try:
            # nats-py retries the first connection too; the timeout turns that into "down".
            async with asyncio.timeout(timeout):
                await nc.connect(
                    servers=self._servers,
                    tls=self._tls,
                    name="modrpc-fabric",
                    connect_timeout=max(1, math.ceil(timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                )
            js = nc.jetstream(timeout=self._options.publish_timeout)
            await js.account_info()  # fails unless JetStream is enabled
        except Exception as exc:
            await _close_quietly(nc)
            cause = failures[-1] if failures else exc
            raise Unavailable(
                f"cannot start the fabric: NATS JetStream at {self._where} is unavailable "
                f"({type(cause).__name__}: {cause})"
            ) from exc
        except BaseException:
            await _close_quietly(nc)  # cancelled while connecting: leave nothing half-open
            raise
        self._nc, self._js = nc, js

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._subs:
            await asyncio.gather(*(sub.close() for sub in list(self._subs)))
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            await _close_quietly(nc)

    def _live(self) -> JetStreamContext:
        if self._js is None:
            state = "closed" if self._closed else "not started"
            raise FailedPrecondition(f"the NATS fabric is {state}")
        return self._js

    async def _stream(self, topic: str) -> str:
        """The stream of ``topic``, created (idempotently) the first time it is used."""
        name = self._streams.get(topic)
        if name is not None:
            return name
        js = self._live()
        options = self._options
        dead = is_dead_letter_topic(topic)
        name = stream_name(options.prefix, topic)
        config = StreamConfig(
            name=name,
            description=f"modrpc fabric topic {topic}",
            subjects=[subject(options.prefix, topic)],
            retention=RetentionPolicy.LIMITS if dead else RetentionPolicy.INTEREST,
            discard=DiscardPolicy.OLD if dead else DiscardPolicy.NEW,
            max_msgs=options.capacity,
            max_msg_size=options.max_message_bytes,
            duplicate_window=options.dedup_window,
            storage=StorageType.MEMORY if options.storage == "memory" else StorageType.FILE,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.APIError as exc:
            if exc.err_code != _STREAM_EXISTS:
                raise translate(exc, doing=f"create stream {name}", where=self._where) from exc
            log.info("stream %s exists with another configuration; using it as it is", name)
        except Exception as exc:
            raise translate(exc, doing=f"create stream {name}", where=self._where) from exc
        self._streams[topic] = name
        return name

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        msg_id: str | None = None,
        ttl: float | None = None,
        priority: int = 0,  # accepted for portability; JetStream delivers in stream order
        timeout: float | None = None,
    ) -> None:
        js = self._js or self._live()
        options = self._options
        if ttl is not None or timeout is not None or len(data) > options.max_message_bytes:
            check_publish(options, topic, data, ttl, timeout)
        if topic not in self._streams:
            check_topic(topic)
            await self._stream(topic)
        sent = None
        if headers is not None or options.request_id is not None or otel_context.get_current():
            sent = outgoing_headers(headers, options.request_id)
        if msg_id is not None or ttl is not None:
            sent = {} if sent is None else sent
            if msg_id is not None:
                sent[MSG_ID_HEADER] = check_msg_id(msg_id)
            if ttl is not None:
                sent[EXPIRES_HEADER] = repr(options.clock() + ttl)
        await self._send(js, topic, data, sent, timeout)

    async def _send(
        self,
        js: JetStreamContext,
        topic: str,
        data: bytes,
        headers: dict[str, str] | None,
        limit: float | None,
    ) -> None:
        """Publish and wait for the server's ack, applying backpressure when the stream is full."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            # nats-py would buffer it until the reconnect; refusing now makes "Unavailable"
            # mean "not sent" instead of "maybe sent later".
            raise Unavailable(
                f"cannot publish to {topic!r}: not connected to NATS at {self._where}"
            )
        options = self._options
        started = time.monotonic()
        total = options.publish_timeout if limit is None else limit
        remaining = total
        to = subject(options.prefix, topic)
        refused_at: float | None = None
        pause = 0.002
        recreated = False
        while True:
            if remaining <= 0:
                raise DeadlineExceeded(f"timed out trying to publish to {topic!r} after {total:g}s")
            try:
                await js.publish(to, data, timeout=remaining, headers=headers)
                return
            except nats.js.errors.APIError as exc:
                if exc.err_code not in _FULL:
                    raise self._failed(exc, topic, limit) from exc
                refused_at = time.monotonic() if refused_at is None else refused_at
                await self._wait_for_room(exc, topic, limit, time.monotonic() - refused_at, pause)
                pause = min(pause * 2, 0.05)
            except nats.js.errors.NoStreamResponseError as exc:
                # The stream was deleted behind our back: recreate it once, then give up.
                if recreated:
                    raise self._failed(exc, topic, limit) from exc
                recreated = True
                self._streams.pop(topic, None)
                await self._stream(topic)
            except Exception as exc:
                raise self._failed(exc, topic, limit) from exc
            remaining = total - (time.monotonic() - started)

    async def _wait_for_room(
        self, exc: Exception, topic: str, limit: float | None, waited: float, pause: float
    ) -> None:
        """Pause before retrying a publish the server refused as full, or give up: see
        ``FabricOptions.backpressure``. A caller's timeout shorter than ``max_wait`` is the
        caller's deadline (``DeadlineExceeded``); otherwise the wait ends in
        ``ResourceExhausted``."""
        options = self._options
        full = f"topic {topic!r} is at capacity ({options.capacity} messages not yet acknowledged)"
        if options.backpressure == "refuse":
            raise ResourceExhausted(full) from exc
        by_deadline = limit is not None and limit < options.max_wait
        budget = limit if by_deadline and limit is not None else options.max_wait
        if waited >= budget:
            if by_deadline:
                raise DeadlineExceeded(
                    f"publish to {topic!r} timed out after {budget:g}s waiting for room"
                ) from exc
            raise ResourceExhausted(f"{full}; waited {budget:g}s for room") from exc
        await asyncio.sleep(min(pause, budget - waited))

    def _failed(self, exc: Exception, topic: str, limit: float | None) -> ModrpcError:
        return translate(
            exc, doing=f"publish to topic {topic!r}", where=self._where, deadline=limit is not None
        )

    async def dead_letter(self, topic: str, data: bytes, headers: dict[str, str]) -> None:
        """Publish a dead letter of ``topic`` to ``dlq.<topic>``."""
        dead = dead_letter_topic(topic)
        js = self._live()
        await self._stream(dead)
        await self._send(js, dead, data, headers, None)

    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        group: str | None = None,
        max_attempts: int = 5,
        ack_wait: float = 30.0,
    ) -> NatsSubscription:
        js = self._live()
        check_topic(topic)
        check_group(group)
        check_subscribe(max_attempts, ack_wait)
        stream = await self._stream(topic)
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,
            deliver_policy=DeliverPolicy.ALL if is_dead_letter_topic(topic) else DeliverPolicy.NEW,
            # An ephemeral consumer must outlive a slow handler, or the server deletes it.
            inactive_threshold=None if group is not None else max(60.0, 2 * ack_wait),
        )
        durable = consumer_name(group) if group is not None else None
        try:
            psub = await js.pull_subscribe(
                subject(self._options.prefix, topic), durable=durable, stream=stream, config=config
            )
        except Exception as exc:
            raise translate(exc, doing=f"subscribe to topic {topic!r}", where=self._where) from exc
        # nats-py names an ephemeral consumer by filling in config.name.
        consumer = config.name or ""
        sub = NatsSubscription(self, topic, group, psub, handler, max_attempts, ack_wait, consumer)
        self._subs.add(sub)
        sub.begin()
        return sub

    def forget(self, sub: NatsSubscription) -> None:
        self._subs.discard(sub)

    async def delete_consumer(self, topic: str, consumer: str) -> None:
        stream = self._streams.get(topic)
        if self._js is not None and stream is not None and consumer:
            await self._js.delete_consumer(stream, consumer)


class NatsSubscription(Worker):
    """One member of a group, pulling batches from its JetStream consumer."""

    def __init__(
        self,
        fabric: NatsFabric,
        topic: str,
        group: str | None,
        psub: JetStreamContext.PullSubscription,
        handler: Handler,
        max_attempts: int,
        ack_wait: float,
        consumer: str,
    ) -> None:
        super().__init__(topic, group, fabric.options.drain_timeout)
        self._fabric = fabric
        self._psub = psub
        self._consumer = consumer
        self._handler = handler
        self._max_attempts = max_attempts
        self._ack_wait = ack_wait
        self._held: deque[Msg] = deque()
        self._current: Msg | None = None

    async def _run(self) -> None:
        psub = self._psub
        batch = self._fabric.options.fetch_batch
        # A cancelled fetch leaves its pull open on the server until it expires, and messages
        # it captures come back only after ack_wait, so pulls are kept short.
        poll = min(1.0, max(0.05, self._ack_wait / 2))
        pause = 0.05
        try:
            while not self._stopping:
                try:
                    msgs = await psub.fetch(batch, timeout=poll)
                except TimeoutError:
                    continue  # nothing to do
                except Exception as exc:
                    if self._stopping:
                        break
                    log.warning(
                        "fetching %s failed (%s); retrying in %.2fs", self.topic, exc, pause
                    )
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                pause = 0.05
                fetched_at = time.monotonic()
                held = self._held
                held.extend(msgs)
                while held and not self._stopping:
                    msg = held.popleft()
                    if time.monotonic() - fetched_at >= self._ack_wait:
                        continue  # past ack_wait: the server has already redelivered it
                    await self._deliver(msg)
        finally:
            await self._finish()

    async def _deliver(self, raw: Msg) -> None:
        attempt = raw.metadata.num_delivered
        headers: Mapping[str, str] = EMPTY_HEADERS
        msg_id: str | None = None
        if raw.headers:
            fields = dict(raw.headers)
            msg_id = fields.pop(MSG_ID_HEADER, None)
            expires = fields.pop(EXPIRES_HEADER, None)
            headers = MappingProxyType(fields)
            if (
                expires is not None
                and attempt == 1
                and _expired(expires, self._fabric.options.clock())
            ):
                await self._settle(raw.ack())
                return
        if attempt > self._max_attempts:
            error = f"not acknowledged after {attempt - 1} deliveries"
            await self._give_up(raw, headers, msg_id, attempt - 1, error)
            return
        self._current = raw
        try:
            await self._handler(Message(self.topic, raw.data, headers, msg_id, attempt))
        except asyncio.CancelledError:
            await self._settle(raw.nak())  # hand it to another member now, not after ack_wait
            raise
        except Exception as exc:
            if attempt >= self._max_attempts:
                await self._give_up(raw, headers, msg_id, attempt, describe_error(exc))
            else:
                log.debug("handler for %s failed (attempt %d): %r", self.topic, attempt, exc)
                await self._settle(raw.nak())
        else:
            await self._settle(raw.ack())
        finally:
            self._current = None

    async def _give_up(
        self, raw: Msg, headers: Mapping[str, str], msg_id: str | None, attempts: int, error: str
    ) -> None:
        """Dead-letter ``raw``, then acknowledge it; if the dead letter fails, retry later."""
        dead = dead_letter_headers(
            headers,
            topic=self.topic,
            group=self.group,
            attempts=attempts,
            error=error,
            msg_id=msg_id,
        )
        try:
            await self._fabric.dead_letter(self.topic, raw.data, dead)
        except ModrpcError as exc:
            log.error(
                "could not dead-letter a message of %s (%s); it will be retried", self.topic, exc
            )
            await self._settle(raw.nak(delay=self._ack_wait))
            return
        log.warning(
            "dead-lettered a message of %s after %d attempts: %s", self.topic, attempts, error
        )
        await self._settle(raw.ack())

    async def _settle(self, reply: Awaitable[Any]) -> None:
        """Send an ack or nak. If it is lost the server redelivers after ack_wait, so a failure
        here is logged, not raised: it costs a duplicate, never a lost message."""
        try:
            await reply
        except Exception as exc:
            log.warning("could not acknowledge a message of %s: %s", self.topic, exc)

    async def _finish(self) -> None:
        """Give back what was fetched but not handled, and let go of the consumer."""
        self._closed = True
        self._fabric.forget(self)
        while self._held:
            await self._settle(self._held.popleft().nak())
        try:
            await self._psub.unsubscribe()
            if self.group is None:  # an ephemeral consumer would hold messages until it expires
                await self._fabric.delete_consumer(self.topic, self._consumer)
        except Exception as exc:
            log.debug("releasing the consumer of %s: %s", self.topic, exc)


def _expired(expires: str, now: float) -> bool:
    try:
        return now >= float(expires)
    except ValueError:
        return False  # not ours to judge; deliver it


async def _close_quietly(nc: Client) -> None:
    try:
        if nc.is_connected:
            await nc.flush(timeout=1)
        await nc.close()
    except Exception as exc:
        log.debug("closing the NATS connection: %s", exc)
