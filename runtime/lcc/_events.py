"""Lifecycle events: the structured record of what happened during one request (Property 20).

Every step of :func:`~runtime.lcc.run_lifecycle` emits a :class:`LifecycleEvent` to an
:class:`EventSink` and into the request's own trace (``lctx.events``), which snapshots and audit
records carry. Events are logged at DEBUG only: they are on the hot path, and the audit record,
not the log, is where they are kept.

Kinds, in the order a request can produce them::

    lifecycle_start                      first event of every request
    hook_start / hook_end / hook_error   one hook (name = hook id); error = why it failed
    validation_error                     name = "request" or "response"
    handler_start / handler_end / handler_error
    module_call                          a call to another module through ``gctx.modules``
                                         (name = its handler id); error set when it failed
    publish                              a message published on a global topic (name = the
                                         topic); error set when it failed
    compensation / compensation_error    one undo step ran (or failed)
    alert                                something an operator must look at (failed undo step,
                                         snapshot that could not be stored)
    cleanup                              one cleanup callback ran; error set when it failed
    lifecycle_end                        last event; error set when the request failed
    refused                              the only event of a call the worker refused before
                                         its lifecycle (name = the peer; error = why)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias, get_args

__all__ = ["EventKind", "EventSink", "LifecycleEvent", "MemoryEventSink"]

EventKind: TypeAlias = Literal[
    "lifecycle_start",
    "hook_start",
    "hook_end",
    "hook_error",
    "validation_error",
    "handler_start",
    "handler_end",
    "handler_error",
    "module_call",
    "publish",
    "compensation",
    "compensation_error",
    "alert",
    "cleanup",
    "lifecycle_end",
    "refused",
]
EVENT_KINDS: frozenset[str] = frozenset(get_args(EventKind))


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One step of one request's lifecycle."""

    kind: EventKind
    """What happened (see the module docstring)."""
    name: str
    """Which thing it happened to: a hook id, the handler id, ``request``/``response``, ..."""
    request_id: str
    handler: str
    """The handler id, ``module.Method``."""
    at: float
    """Wall-clock time (unix seconds) the event was emitted."""
    duration_ms: float | None = None
    """How long the step took, for events that end a step."""
    error: str | None = None
    """``ExceptionType: message`` when the step failed."""

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown lifecycle event kind {self.kind!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "request_id": self.request_id,
            "handler": self.handler,
            "at": self.at,
            "duration_ms": self.duration_ms,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LifecycleEvent:
        return cls(
            kind=data["kind"],
            name=data["name"],
            request_id=data["request_id"],
            handler=data["handler"],
            at=data["at"],
            duration_ms=data.get("duration_ms"),
            error=data.get("error"),
        )


class EventSink(Protocol):
    """Where lifecycle events go. ``emit`` is called on the event loop: it must not block or raise."""

    def emit(self, event: LifecycleEvent) -> None: ...


@dataclass(slots=True)
class MemoryEventSink:
    """A sink that keeps every event in a list: for tests, and to build one audit record."""

    events: list[LifecycleEvent] = field(default_factory=list)

    def emit(self, event: LifecycleEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        """The kinds of the events so far, in order."""
        return [event.kind for event in self.events]
