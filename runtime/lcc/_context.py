"""LocalContext: everything that belongs to one request and to nothing else (SPEC §3).

A handler receives its ``lctx`` as the second argument::

    async def reserve(req: Reserve, lctx: LocalContext, gctx: GlobalContext) -> Reserved:
        lctx.set("sku", req.sku)
        hold = await gctx.modules.inventory.hold(req.sku)
        lctx.compensate(lambda: gctx.modules.inventory.release(hold.id))   # undo on failure
        lctx.on_cleanup(lambda: log.info("reserve done"))                 # always runs
        return Reserved(hold=hold.id)

Nothing in a ``LocalContext`` is shared: its state, its event listeners, its hooks and tasks are
private to the one request, which is what makes Properties 23 and 26 hold under concurrency.
The object is single-use: :func:`runtime.lcc.run_lifecycle` runs it once.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from runtime.deadline import Clock
from runtime.errors import ModrpcError, status_of
from runtime.lcc._calls import callable_name, describe_error
from runtime.lcc._events import EventKind, LifecycleEvent
from runtime.lcc._hooks import HookSpec, Phase
from runtime.lcc._json import to_jsonable
from runtime.lcc._meta import RequestMeta
from runtime.lcc._snapshot import SNAPSHOT_FORMAT, Snapshot, TaskStatus

__all__ = ["Compensation", "EffectKind", "LocalContext", "Redactor", "current_context"]

T = TypeVar("T")
Redactor = Callable[[Any], Any]
"""Takes the JSON document of a snapshot and returns it with every secret replaced."""
Listener = Callable[[Any], Any]

logger = logging.getLogger("modrpc.lcc")


EffectKind = Literal["module_call", "publish"]
"""What a request can do outside itself that the lifecycle records: call a module, publish."""

Emit = Callable[[EventKind, str, float, "str | None"], None]
"""How a context hands an event to its running lifecycle: kind, name, start, error."""

_current: ContextVar[LocalContext | None] = ContextVar("modrpc_current_lctx", default=None)


def current_context() -> LocalContext | None:
    """The context of the request whose lifecycle is running here, if any.

    Set by :func:`runtime.lcc.run_lifecycle` for everything the request runs (hooks, handler,
    undo steps, cleanup, and the tasks and threads they start), so ``gctx`` can record a module
    call or a publish in the request it belongs to.
    """
    return _current.get()


def _keep(document: Any) -> Any:
    return document


@dataclass(slots=True)
class _Effect:
    kind: EffectKind
    target: str
    request: Any
    response: Any
    status: str
    message: str
    duration_ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "request": to_jsonable(self.request),
            "response": to_jsonable(self.response),
            "status": self.status,
            "message": self.message,
            "duration_ms": self.duration_ms,
        }


@dataclass(frozen=True, slots=True)
class Compensation:
    """One undo step registered with :meth:`LocalContext.compensate`."""

    name: str
    fn: Callable[[], Any]
    timeout: float | None = None


class LocalContext:
    """The per-request context: state, meta, scoped events, hooks, cleanup, undo steps, tasks.

    ``redact`` is applied to the whole JSON document of every snapshot taken from this context,
    so secrets never enter a snapshot; the worker passes the secrets manager's redactor.
    """

    def __init__(self, meta: RequestMeta, *, redact: Redactor | None = None) -> None:
        self._meta = meta
        self._redact: Redactor = redact or _keep
        self._state: dict[str, Any] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._hooks: list[HookSpec] = []
        self._cleanups: list[Callable[[], Any]] = []
        self._compensations: list[Compensation] = []
        self._tasks: dict[str, asyncio.Task[Any] | TaskStatus] = {}
        self._events: list[LifecycleEvent] = []
        self._effects: list[_Effect] = []
        self._emit: Emit | None = None
        self._last_hook = -1
        self._request: Any = None
        self._started = False

    def __repr__(self) -> str:
        return f"<LocalContext {self._meta.handler} request_id={self._meta.request_id}>"

    @property
    def meta(self) -> RequestMeta:
        """Request id, handler, method, version, flags, deadline and principal (Property 27)."""
        return self._meta

    @property
    def request(self) -> Any:
        """The request being handled (JSON data in a restored context)."""
        return self._request

    # -- key-value state ---------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        return self._state.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._state[key] = value

    def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it was there."""
        return self._state.pop(key, _MISSING) is not _MISSING

    def clear(self) -> None:
        self._state.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._state

    @property
    def state(self) -> Mapping[str, Any]:
        """A read-only live view of the state."""
        return MappingProxyType(self._state)

    # -- request-scoped events ---------------------------------------------------------------

    def subscribe(self, event: str, callback: Listener) -> Callable[[], None]:
        """Call ``callback(payload)`` on each :meth:`publish` of ``event`` in this request only.

        Returns a function that unsubscribes. Async callbacks are awaited; plain ones are
        called on the loop (they are for quick in-request coordination, not for I/O).
        """
        listeners = self._listeners.setdefault(event, [])
        listeners.append(callback)

        def unsubscribe() -> None:
            if callback in listeners:
                listeners.remove(callback)

        return unsubscribe

    async def publish(self, event: str, payload: Any = None) -> int:
        """Deliver ``payload`` to this request's listeners of ``event``, in subscription order.

        Returns how many listeners were called. A listener that raises stops delivery and the
        error reaches the publisher, as any other error in the same request would.
        """
        listeners = list(self._listeners.get(event, ()))
        for listener in listeners:
            result = listener(payload)
            if inspect.isawaitable(result):
                await result
        return len(listeners)

    # -- hooks, cleanup, compensations ---------------------------------------------------------

    def add_hook(
        self,
        phase: Phase,
        fn: Callable[..., Any],
        *,
        timeout: float | None = None,
        retries: int = 0,
        id: str | None = None,
    ) -> HookSpec:
        """Register a request-level hook; it runs innermost (see :mod:`runtime.lcc._hooks`).

        Registering from a before hook or the handler works: each phase reads the hooks when it
        starts. A wrong signature raises :class:`runtime.errors.SchemaError` here.
        """
        spec = HookSpec.of(fn, phase, "request", timeout=timeout, retries=retries, id=id)
        self._hooks.append(spec)
        return spec

    @property
    def hooks(self) -> tuple[HookSpec, ...]:
        """The request-level hooks registered so far."""
        return tuple(self._hooks)

    def on_cleanup(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` (sync or async) when the request ends, however it ends; newest first."""
        self._cleanups.append(fn)

    def compensate(
        self, fn: Callable[[], Any], *, name: str | None = None, timeout: float | None = None
    ) -> None:
        """Register an undo step for a side effect just made (a saga step).

        If the request fails (or is cancelled) the undo steps run newest first. One that fails
        raises an ``alert`` lifecycle event and the others still run.
        """
        self._compensations.append(Compensation(name or callable_name(fn), fn, timeout))

    # -- tasks ---------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Start ``coro`` as a task owned by this request.

        Snapshots report its status; if it is still running when the request ends it is
        cancelled, because nothing request-scoped may outlive the request. Call it from async
        code (the handler or an async hook): sync hooks run in a thread, which has no loop.
        """
        name = name or f"task-{len(self._tasks) + 1}"
        if name in self._tasks:
            coro.close()
            raise ValueError(f"request {self._meta.request_id} already has a task named {name!r}")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._meta.request_id}:{name}")
        self._tasks[name] = task
        return task

    def task_status(self) -> dict[str, TaskStatus]:
        """Each spawned task's status, by name."""
        return {
            name: task if isinstance(task, str) else _status_of(task)
            for name, task in self._tasks.items()
        }

    # -- effects -------------------------------------------------------------------------------

    def record_effect(
        self,
        kind: EffectKind,
        target: str,
        request: Any,
        *,
        started: float,
        response: Any = None,
        error: BaseException | None = None,
    ) -> None:
        """Record something this request did outside itself, once it is done.

        ``gctx`` calls this for each module call (``target`` = the handler id called) and each
        publish (``target`` = the topic); ``started`` is the ``time.perf_counter()`` at its start.
        It becomes a ``module_call`` or ``publish`` lifecycle event with its duration (so audit
        records and traces show it), and an entry of the snapshot's ``effects`` with the request
        and the response or status, from which a replay answers the same call again.
        """
        duration = (time.perf_counter() - started) * 1000
        status, message = "OK", ""
        if error is not None:
            status = status_of(error).name
            message = error.message if isinstance(error, ModrpcError) else type(error).__name__
        self._effects.append(_Effect(kind, target, request, response, status, message, duration))
        if self._emit is not None:
            self._emit(kind, target, started, None if error is None else describe_error(error))

    @property
    def effects(self) -> tuple[dict[str, Any], ...]:
        """The recorded effects so far, as JSON data (see :meth:`record_effect`)."""
        return tuple(effect.to_json() for effect in self._effects)

    # -- snapshots -----------------------------------------------------------------------------

    @property
    def events(self) -> tuple[LifecycleEvent, ...]:
        """The lifecycle events of this request so far."""
        return tuple(self._events)

    @property
    def last_hook(self) -> int:
        """Position of the last hook started, in run order; -1 before the first."""
        return self._last_hook

    def snapshot(self) -> Snapshot:
        """The request's lifecycle state now, redacted (see :class:`runtime.lcc.Snapshot`)."""
        document = {
            "format": SNAPSHOT_FORMAT,
            "request": to_jsonable(self._request),
            "state": to_jsonable(self._state),
            "tasks": self.task_status(),
            "last_hook": self._last_hook,
            "version": self._meta.version,
            "events": [event.to_json() for event in self._events],
            "meta": self._meta.to_json(),
            "effects": list(self.effects),
        }
        return Snapshot.from_json(self._redact(document))

    @classmethod
    def restore(
        cls, snapshot: Snapshot, *, redact: Redactor | None = None, clock: Clock = time.monotonic
    ) -> LocalContext:
        """Rebuild the context a snapshot was taken from (Property 47).

        State, request, events, task statuses and the hook position come back as recorded (in
        their JSON form); the deadline starts again with the milliseconds that were left. Tasks
        are records only: nothing is re-run. The result is a record of a past request, so it
        cannot be run again; replay the snapshot instead.
        """
        lctx = cls(RequestMeta.from_json(snapshot.meta, clock=clock), redact=redact)
        lctx._request = copy.deepcopy(snapshot.request)
        lctx._state = copy.deepcopy(snapshot.state)
        lctx._tasks = dict(snapshot.tasks)
        lctx._events = list(snapshot.events)
        lctx._effects = [_restored(effect) for effect in snapshot.effects]
        lctx._last_hook = snapshot.last_hook
        lctx._started = True
        return lctx

    # -- used by run_lifecycle -------------------------------------------------------------------

    def _begin(self, request: Any, emit: Emit) -> Any:
        """Start the request; returns the token :meth:`_end` needs."""
        if self._started:
            raise RuntimeError(f"{self!r} has already run a request; a LocalContext is single-use")
        self._started = True
        self._request = request
        self._emit = emit
        return _current.set(self)

    def _end(self, token: Any) -> None:
        self._emit = None
        _current.reset(token)

    def _has_leftovers(self) -> bool:
        """Whether the request's ending has tasks to settle or cleanup callbacks to run."""
        return bool(self._tasks or self._cleanups)

    def _record(self, event: LifecycleEvent) -> None:
        self._events.append(event)

    def _hook_started(self) -> None:
        self._last_hook += 1

    def _take_cleanups(self) -> list[Callable[[], Any]]:
        taken, self._cleanups = self._cleanups, []
        return taken

    def _take_compensations(self) -> list[Compensation]:
        taken, self._compensations = self._compensations, []
        return taken

    async def _settle_tasks(self) -> None:
        """Cancel the tasks still running and wait for them; log the ones that failed."""
        tasks = [task for task in self._tasks.values() if isinstance(task, asyncio.Task)]
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                logger.warning(
                    "request %s: task %s failed: %r",
                    self._meta.request_id,
                    task.get_name(),
                    task.exception(),
                )


_MISSING = object()


def _restored(data: Mapping[str, Any]) -> _Effect:
    return _Effect(
        data["kind"],
        data["target"],
        data.get("request"),
        data.get("response"),
        str(data.get("status", "OK")),
        str(data.get("message", "")),
        float(data.get("duration_ms") or 0.0),
    )


def _status_of(task: asyncio.Task[Any]) -> TaskStatus:
    if not task.done():
        return "pending"
    if task.cancelled():
        return "cancelled"
    return "failed" if task.exception() is not None else "done"
