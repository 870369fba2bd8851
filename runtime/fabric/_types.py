"""The fabric's core contract: the message, the two protocols, options and shared rules.

Everything a backend must agree on lives here, so the memory and NATS backends differ only in
how they move bytes: topic and header rules, the dead-letter naming and headers, how trace
context and the request id are put into outgoing headers, and the options both accept.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType, TracebackType
from typing import Literal, Protocol, Self

from opentelemetry import context as otel_context
from opentelemetry import propagate

from runtime.deadline import Clock
from runtime.errors import InvalidArgument, ResourceExhausted

__all__ = [
    "DLQ_ATTEMPTS_HEADER",
    "DLQ_ERROR_HEADER",
    "DLQ_GROUP_HEADER",
    "DLQ_MSG_ID_HEADER",
    "DLQ_TOPIC_HEADER",
    "REQUEST_ID_HEADER",
    "TRACEPARENT_HEADER",
    "Backpressure",
    "Fabric",
    "FabricOptions",
    "Handler",
    "MemoryOptions",
    "Message",
    "NatsOptions",
    "Subscription",
    "dead_letter_topic",
    "inject_trace",
]

Backpressure = Literal["refuse", "wait"]

TRACEPARENT_HEADER = "traceparent"
REQUEST_ID_HEADER = "x-request-id"
DLQ_ERROR_HEADER = "modrpc-dlq-error"
"""On a dead letter: ``ExceptionType: message`` of the last failure (or why it was given up)."""
DLQ_ATTEMPTS_HEADER = "modrpc-dlq-attempts"
"""On a dead letter: how many deliveries were made before giving up."""
DLQ_TOPIC_HEADER = "modrpc-dlq-topic"
"""On a dead letter: the topic the message was first published to."""
DLQ_GROUP_HEADER = "modrpc-dlq-group"
"""On a dead letter: the consumer group that gave up (empty for an ungrouped subscriber)."""
DLQ_MSG_ID_HEADER = "modrpc-dlq-msg-id"
"""On a dead letter: the original ``msg_id``, when the message had one."""

DLQ_PREFIX = "dlq."
_RESERVED_PREFIXES = ("modrpc-", "nats-")
_TOPIC = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_HEADER_KEY = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_MAX_TOPIC = 200
_MAX_ERROR_TEXT = 1024
EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})


# Not frozen: a frozen dataclass costs three times as much to build, and one is built per
# delivery on the hot path. Each delivery gets its own Message and the parts it shares with other
# deliveries (bytes, a read-only headers view) cannot be changed, so nothing leaks through it.
@dataclass(slots=True)
class Message:
    """One delivery of a published message to one subscriber.

    The handler acknowledges by returning; raising makes the fabric redeliver it, and after
    ``max_attempts`` deliveries it moves to ``dlq.<topic>``. Delivery is at-least-once, so a
    handler should be idempotent (``msg_id`` is a good key for that).
    """

    topic: str
    data: bytes
    headers: Mapping[str, str] = field(default_factory=lambda: EMPTY_HEADERS)
    """What the publisher sent, plus ``traceparent`` and ``x-request-id`` when they were known."""
    msg_id: str | None = None
    """The publisher's id for exactly-once publishing, or ``None``."""
    attempt: int = 1
    """1 on the first delivery to this subscriber's group, 2 on the first redelivery, ..."""

    @property
    def traceparent(self) -> str | None:
        """The W3C trace context of the publish, when one was active."""
        return self.headers.get(TRACEPARENT_HEADER)

    @property
    def request_id(self) -> str | None:
        """The id of the request that published this message, when there was one."""
        return self.headers.get(REQUEST_ID_HEADER)

    def trace_context(self) -> otel_context.Context:
        """The publisher's OpenTelemetry context, to start the consumer span as its child.

        >>> from opentelemetry import trace
        >>> tracer = trace.get_tracer("orders")
        >>> async def handle(msg: Message) -> None:
        ...     with tracer.start_as_current_span("consume", context=msg.trace_context()):
        ...         ...
        """
        return propagate.extract(dict(self.headers))


Handler = Callable[[Message], Awaitable[None]]
"""A subscriber: returns to acknowledge, raises to ask for a redelivery."""


class Subscription(Protocol):
    """A live subscription. Closing it stops deliveries; what was in flight is redelivered.

    The handler runs in the subscription's own task, one message at a time; subscribe several
    members to the same group for parallel consumption.
    """

    @property
    def topic(self) -> str: ...

    @property
    def group(self) -> str | None: ...

    @property
    def closed(self) -> bool: ...

    async def close(self) -> None:
        """Stop consuming. Waits up to the fabric's ``drain_timeout`` for a running handler,
        then cancels it; an unacknowledged message goes back to the topic. Safe twice."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Fabric(Protocol):
    """Topics with publish and subscribe, at-least-once, shared by every backend.

    >>> async def example(fabric: Fabric) -> None:
    ...     async def on_order(msg: Message) -> None:
    ...         print(msg.data)
    ...     async with fabric:
    ...         await fabric.subscribe("orders.created", on_order, group="billing")
    ...         await fabric.publish("orders.created", b"{}", msg_id="order-17")
    """

    async def start(self) -> None:
        """Connect (when there is anything to connect to). Idempotent."""
        ...

    async def close(self) -> None:
        """Close every subscription (draining them) and disconnect. Safe twice."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

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
        """Publish ``data`` to ``topic``; returns once the fabric has accepted it.

        ``msg_id`` makes the publish exactly-once within the dedup window: a second publish with
        the same id is accepted and dropped. ``ttl`` drops the message if no delivery starts
        within that many seconds. At capacity this refuses (``ResourceExhausted``) or waits up
        to ``max_wait``; ``timeout`` bounds the whole call and surfaces as
        ``DeadlineExceeded``.
        """
        ...

    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        group: str | None = None,
        max_attempts: int = 5,
        ack_wait: float = 30.0,
    ) -> Subscription:
        """Deliver ``topic``'s messages to ``handler``.

        Members of one ``group`` compete: each message reaches one of them, and the group is
        durable (messages wait for it while it has no members). Every group, and every
        ungrouped subscriber, gets every message. A delivery not acknowledged within
        ``ack_wait`` seconds is redelivered.
        """
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FabricOptions:
    """Options every backend accepts (``open_fabric(url, **options)``)."""

    capacity: int = 10_000
    """Most messages per topic that are accepted but not yet acknowledged by every group."""
    backpressure: Backpressure = "wait"
    """At capacity: ``refuse`` at once, or ``wait`` up to ``max_wait`` for room."""
    max_wait: float = 1.0
    """Longest a publish waits for room before ``ResourceExhausted`` (``wait`` mode)."""
    dedup_window: float = 120.0
    """Seconds a ``msg_id`` is remembered for exactly-once publishing."""
    drain_timeout: float = 5.0
    """On close, how long a running handler may finish before it is cancelled."""
    max_message_bytes: int = 1 << 20
    """Largest payload accepted; bigger ones get ``ResourceExhausted``."""
    request_id: Callable[[], str | None] | None = None
    """Where the current request id comes from, e.g. ``runtime.observability.request_id_var.get``;
    it is sent as ``x-request-id`` unless the caller's headers already carry one. A callable
    rather than an import keeps the fabric free of the serving stack."""

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise InvalidArgument(f"fabric capacity must be at least 1, got {self.capacity}")
        if self.backpressure not in ("refuse", "wait"):
            raise InvalidArgument(
                f"fabric backpressure must be 'refuse' or 'wait', got {self.backpressure!r}"
            )
        for name in ("max_wait", "dedup_window", "drain_timeout"):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"fabric option {name} must not be negative")
        if self.max_message_bytes < 1:
            raise InvalidArgument("fabric option max_message_bytes must be at least 1")

    @classmethod
    def build(cls, options: Mapping[str, object]) -> Self:
        """Options from keyword arguments, naming any that this backend does not know."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidArgument(
                f"unknown fabric option(s) {', '.join(unknown)} for {cls.__name__}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**options)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryOptions(FabricOptions):
    """Options of the in-memory fabric."""

    clock: Clock = field(default=time.monotonic, repr=False)
    """Monotonic clock for TTLs, ack waits and the dedup window; tests pass their own."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsOptions(FabricOptions):
    """Options of the NATS JetStream fabric."""

    prefix: str = "modrpc"
    """Subject prefix and stream-name prefix; a distinct prefix isolates a deployment or test."""
    storage: Literal["file", "memory"] = "file"
    """JetStream storage for streams the fabric creates."""
    fetch_batch: int = 64
    """Messages pulled per fetch; bigger is faster, smaller redelivers less after a crash."""
    connect_timeout: float = 2.0
    """Seconds to reach the server at start before ``Unavailable``."""
    publish_timeout: float = 5.0
    """Seconds to wait for the server's acknowledgement when the caller gave no ``timeout``."""
    clock: Clock = field(default=time.time, repr=False)
    """Wall clock for TTL expiry; wall time because publisher and consumer are different hosts."""

    def __post_init__(self) -> None:
        FabricOptions.__post_init__(self)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", self.prefix):
            raise InvalidArgument(
                f"NATS fabric prefix must be 1-32 letters, digits, '_' or '-', got {self.prefix!r}"
            )
        if self.fetch_batch < 1:
            raise InvalidArgument("NATS fabric option fetch_batch must be at least 1")
        if self.storage not in ("file", "memory"):
            raise InvalidArgument(
                f"NATS fabric storage must be 'file' or 'memory', got {self.storage!r}"
            )


def dead_letter_topic(topic: str) -> str:
    """Where messages of ``topic`` go after their last failed attempt."""
    return DLQ_PREFIX + topic


def is_dead_letter_topic(topic: str) -> bool:
    """Dead-letter topics keep their messages even with no subscriber, so nothing is lost."""
    return topic.startswith(DLQ_PREFIX)


def check_topic(topic: str) -> str:
    """A topic is dot-separated tokens of letters, digits, ``_`` and ``-`` (no wildcards)."""
    if len(topic) > _MAX_TOPIC or not _TOPIC.fullmatch(topic):
        raise InvalidArgument(
            f"invalid topic {topic!r}: use dot-separated tokens of letters, digits, '_' or '-' "
            f"(at most {_MAX_TOPIC} characters)"
        )
    return topic


def check_group(group: str | None) -> str | None:
    """Group names follow the topic rules; ``None`` means an ungrouped subscriber."""
    if group is not None and (len(group) > _MAX_TOPIC or not _TOPIC.fullmatch(group)):
        raise InvalidArgument(
            f"invalid group {group!r}: use letters, digits, '.', '_' or '-' "
            f"(at most {_MAX_TOPIC} characters)"
        )
    return group


def check_subscribe(max_attempts: int, ack_wait: float) -> None:
    if max_attempts < 1:
        raise InvalidArgument(f"max_attempts must be at least 1, got {max_attempts}")
    if ack_wait <= 0:
        raise InvalidArgument(f"ack_wait must be positive, got {ack_wait}")


def check_publish(
    options: FabricOptions, topic: str, data: bytes, ttl: float | None, timeout: float | None
) -> None:
    """The checks both backends make before a publish touches any state."""
    if len(data) > options.max_message_bytes:
        raise ResourceExhausted(
            f"message for topic {topic!r} is {len(data)} bytes; "
            f"the limit is {options.max_message_bytes}"
        )
    if ttl is not None and ttl <= 0:
        raise InvalidArgument(f"ttl must be positive, got {ttl}")
    if timeout is not None and timeout < 0:
        raise InvalidArgument(f"timeout must not be negative, got {timeout}")


def check_msg_id(msg_id: str) -> str:
    """A message id is a non-empty single-line string (it travels as a header on NATS)."""
    if not isinstance(msg_id, str) or not msg_id or "\r" in msg_id or "\n" in msg_id:
        raise InvalidArgument(f"msg_id must be a non-empty single-line string, got {msg_id!r}")
    return msg_id


def inject_trace(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Add the current OpenTelemetry context (``traceparent``, ``tracestate``, baggage).

    Returns ``headers`` (or a new dict) so it can be used inline. Publishing calls this for
    you; it is public for code that builds headers for another transport.
    """
    carrier: dict[str, str] = {} if headers is None else headers
    ctx = otel_context.get_current()
    if ctx:  # an empty context has nothing to propagate; skipping it keeps publish cheap
        propagate.inject(carrier, context=ctx)
    return carrier


def outgoing_headers(
    headers: Mapping[str, str] | None, request_id: Callable[[], str | None] | None
) -> dict[str, str] | None:
    """The headers a publish sends: the caller's, checked, plus trace context and request id.

    ``None`` when there is nothing to send, which keeps the common case allocation-free.
    """
    rid = request_id() if request_id is not None else None
    if headers is None and rid is None and not otel_context.get_current():
        return None
    out: dict[str, str] = {}
    if headers:
        for key, value in headers.items():
            _check_header(key, value)
            out[key] = value
    if rid is not None and REQUEST_ID_HEADER not in out:
        out[REQUEST_ID_HEADER] = rid
    inject_trace(out)
    return out or None


def _check_header(key: str, value: str) -> None:
    if not isinstance(key, str) or not _HEADER_KEY.fullmatch(key):
        raise InvalidArgument(f"invalid header name {key!r}")
    if key.lower().startswith(_RESERVED_PREFIXES):
        raise InvalidArgument(f"header {key!r} is reserved for the fabric")
    if not isinstance(value, str) or "\r" in value or "\n" in value:
        raise InvalidArgument(f"header {key!r} must be a single-line string")


def dead_letter_headers(
    headers: Mapping[str, str],
    *,
    topic: str,
    group: str | None,
    attempts: int,
    error: str,
    msg_id: str | None,
) -> dict[str, str]:
    """The original headers plus what a dead letter records about why it was given up."""
    out = dict(headers)
    out[DLQ_ERROR_HEADER] = " ".join(error.split())[:_MAX_ERROR_TEXT] or "unknown error"
    out[DLQ_ATTEMPTS_HEADER] = str(attempts)
    out[DLQ_TOPIC_HEADER] = topic
    out[DLQ_GROUP_HEADER] = group or ""
    if msg_id is not None:
        out[DLQ_MSG_ID_HEADER] = msg_id
    return out


def describe_error(exc: BaseException) -> str:
    """``Type: message``, the form recorded on a dead letter.

    An error relayed from another process (the hub's remote subscriber) already carries that
    form as its ``described`` attribute, and it is kept as the subscriber wrote it.
    """
    described = getattr(exc, "described", None)
    if isinstance(described, str):
        return described
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Lifecycle:
    """``async with`` support built on ``start``/``close``, shared by both backends."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
