"""The queue fabric: topics with at-least-once publish and subscribe (SPEC section 6).

Two backends pass one contract suite: :class:`MemoryFabric` (``memory://``, the embedded
default) and :class:`NatsFabric` (``nats://host:port``, JetStream). Pick one by URL with
:func:`open_fabric`.

    >>> async def example() -> None:
    ...     async with open_fabric("memory://") as fabric:
    ...         async def on_created(msg: Message) -> None:
    ...             print(msg.topic, msg.data, msg.attempt, msg.request_id)
    ...         await fabric.subscribe("orders.created", on_created, group="billing")
    ...         await fabric.publish("orders.created", b"{}", msg_id="order-17", timeout=0.5)

Semantics shared by both backends:

* **Delivery** is at-least-once. A handler acknowledges by returning; raising redelivers, up to
  ``max_attempts``, and then the message goes to ``dlq.<topic>`` with the error text and the
  attempt count in its headers (``DLQ_ERROR_HEADER``, ``DLQ_ATTEMPTS_HEADER``). A delivery not
  acknowledged within ``ack_wait`` (its subscriber hung or died) is redelivered too.
* **Groups**: the members of one group compete for messages; every group, and every ungrouped
  subscriber, receives every message. A group is durable; an ungrouped subscriber is not.
* **Exactly-once publish**: a repeated ``msg_id`` within ``dedup_window`` is dropped.
* **TTL**: a message whose first delivery has not started within ``ttl`` seconds is dropped.
* **Priority**: higher first in memory; not supported on NATS (stream order), where it is
  accepted and ignored so the same code runs on both.
* **Backpressure**: a topic holds at most ``capacity`` unacknowledged messages. At capacity a
  publish is refused (``ResourceExhausted``) or waits up to ``max_wait``; a ``timeout`` shorter
  than that surfaces as ``DeadlineExceeded``, so the request that published can be cancelled
  cleanly. Cancelling a waiting publish cancels it.
* **Trace context and request id** travel as ``traceparent`` and ``x-request-id`` headers;
  see :func:`inject_trace` and :meth:`Message.trace_context`.

A worker never publishes a handler's message from the call itself: it goes through the
transactional outbox (:class:`OutboxRelay`, :class:`OutboxBatch`), committed locally when the
handler succeeds (with the module's own write when the module does that) and relayed to the
fabric, at least once, when the fabric takes it. A fabric outage loses no event.
"""

from runtime.fabric._hub import FabricHub
from runtime.fabric._open import open_fabric
from runtime.fabric._outbox import OutboxBatch, OutboxRelay, OutgoingMessage
from runtime.fabric._types import (
    DLQ_ATTEMPTS_HEADER,
    DLQ_ERROR_HEADER,
    DLQ_GROUP_HEADER,
    DLQ_MSG_ID_HEADER,
    DLQ_TOPIC_HEADER,
    Fabric,
    Message,
    Subscription,
    dead_letter_topic,
)

__all__ = [
    "DLQ_ATTEMPTS_HEADER",
    "DLQ_ERROR_HEADER",
    "DLQ_GROUP_HEADER",
    "DLQ_MSG_ID_HEADER",
    "DLQ_TOPIC_HEADER",
    "Fabric",
    "FabricHub",
    "Message",
    "OutboxBatch",
    "OutboxRelay",
    "OutgoingMessage",
    "Subscription",
    "dead_letter_topic",
    "open_fabric",
]
