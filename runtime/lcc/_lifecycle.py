"""The request lifecycle: hooks, validation, handler, compensations and cleanup, in order.

One call of :func:`run_lifecycle` runs one request (ARCHITECTURE "Request flow")::

    before hooks (global → module → handler → request)
    validate request          ValidationFailed → INVALID_ARGUMENT; the handler never runs
    handler(req, lctx, gctx)
    validate response         InternalError("response failed validation") → INTERNAL
    after hooks (request → handler → module → global)

    on error:        catch hooks (reverse order), then undo steps (newest first)
    on cancellation: undo steps (newest first); catch hooks are for errors, not for a caller
                     that went away
    always:          cancel leftover tasks, cleanup callbacks (newest first), lifecycle_end,
                     and a stored snapshot when the policy or the ``snapshot`` flag asks (the
                     flag alone never stores a request that validation refused)

The deadline in ``lctx.meta`` bounds everything up to the after hooks: past it the running step is
cancelled and the request fails with :class:`runtime.errors.DeadlineExceeded`. Catch hooks, undo
steps and cleanup run after that point, bounded by their own timeouts, because undoing side
effects matters more than answering on time.

The lifecycle runs in the task that awaits it (a transport's call task), so a call costs no task
of its own. A transport cancels that task when the caller goes away, and at the deadline too; a
cancellation at the deadline counts as the deadline. The ending (catch hooks, undo steps,
cleanup, the snapshot), when there is one, runs in a task that no further cancellation reaches
(:func:`to_the_end`), and the cancellation is raised once it is done.

A streaming call (:class:`Stream`) runs the same lifecycle once for the whole stream: before
hooks when it opens, after hooks when it closes, and the deadline over all of it. Each request
message is validated as the handler reads it, each response message as the handler yields it
(before it is sent); a bad message fails the call like a bad unary request or response, and so
does an error anywhere mid-stream, running catch hooks and undo steps. Hooks are given ``None``
for a side that streams. Streams are not snapshotted: their messages are not kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from runtime.deadline import Expiry
from runtime.errors import DeadlineExceeded, InternalError, ValidationFailed
from runtime.lcc._calls import call_any, call_with_timeout, callable_name, describe_error
from runtime.lcc._context import LocalContext
from runtime.lcc._events import EventKind, EventSink, LifecycleEvent
from runtime.lcc._hooks import HookSpec, Phase, ordered, run_hook
from runtime.lcc._snapshot import should_snapshot
from runtime.lcc._store import SnapshotStore

__all__ = ["LifecycleCall", "Stream", "run_lifecycle"]

logger = logging.getLogger("modrpc.lcc")

T = TypeVar("T")


@dataclass(kw_only=True, slots=True)
class Stream:
    """The streamed sides of one call, and how many messages went each way."""

    requests: AsyncIterable[Any] | None = None
    """The request messages (decoded, not yet validated), when the request streams. The handler
    reads them through the lifecycle, which validates each one first."""
    send: Callable[[Any], Awaitable[None]] | None = None
    """Where each response message goes once validated, when the response streams. The handler
    is not asked for the next message until ``send`` returns: a slow reader slows it down."""
    received: int = 0
    """Request messages the handler was given."""
    sent: int = 0
    """Response messages sent."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LifecycleCall:
    """Everything one run of the lifecycle needs, built by the worker for each request."""

    handler: Callable[..., Any]
    """``handler(req, lctx, gctx)``: ``async def`` is awaited, a plain ``def`` runs in a thread."""
    request: Any
    """The decoded request object handed to hooks, validators and the handler."""
    lctx: LocalContext
    """This request's context; its ``meta.deadline`` is the deadline enforced."""
    gctx: Any = None
    """The process's GlobalContext, passed through to the handler untouched."""
    hooks: Sequence[HookSpec] = ()
    """Global, module and handler level hooks, each level in registration order. Request-level
    hooks come from ``lctx.add_hook``."""
    validate_request: Callable[[Any], None] | None = None
    """Raises :class:`runtime.errors.ValidationFailed` for a bad request."""
    validate_response: Callable[[Any], None] | None = None
    """Raises :class:`runtime.errors.ValidationFailed` for a bad response."""
    sink: EventSink | None = None
    """Receives every lifecycle event as it happens (e.g. to build the audit record)."""
    snapshots: SnapshotStore | None = None
    """Where to store a snapshot when :func:`runtime.lcc.should_snapshot` says so."""
    snapshot_policy: bool = False
    """The method's policy asks for a snapshot of every call."""
    stream: Stream | None = None
    """Set for a streaming call: which sides stream, and the message counts."""


async def run_lifecycle(call: LifecycleCall) -> Any:
    """Run one request through its whole lifecycle and return the handler's response.

    Raises what the request failed with: the handler's or a hook's exception,
    :class:`~runtime.errors.ValidationFailed`, :class:`~runtime.errors.InternalError` for a bad
    response, :class:`~runtime.errors.DeadlineExceeded`, or ``CancelledError`` when the caller
    went away. Either way the cleanup callbacks have run.

        >>> from runtime.lcc import LifecycleCall, LocalContext, RequestMeta, run_lifecycle
        >>> async def hello(req, lctx, gctx):
        ...     return {"greeting": f"hello {req['name']}"}
        >>> meta = RequestMeta(request_id="r1", handler="greeter.Hello",
        ...                    method="/greeter.v1.Greeter/Hello", version="2025-06-01")
        >>> asyncio.run(run_lifecycle(LifecycleCall(
        ...     handler=hello, request={"name": "ada"}, lctx=LocalContext(meta))))
        {'greeting': 'hello ada'}
    """
    return await _Run(call).run()


class _Run:
    """The state of one :func:`run_lifecycle` call; split out so each phase reads on its own."""

    def __init__(self, call: LifecycleCall) -> None:
        self.call = call
        self.lctx = call.lctx
        self.meta = call.lctx.meta

    def emit(
        self, kind: EventKind, name: str, *, started: float | None = None, error: str | None = None
    ) -> None:
        duration = None if started is None else (time.perf_counter() - started) * 1000
        event = LifecycleEvent(
            kind=kind,
            name=name,
            request_id=self.meta.request_id,
            handler=self.meta.handler,
            at=time.time(),
            duration_ms=duration,
            error=error,
        )
        self.lctx._record(event)
        if self.call.sink is not None:
            self.call.sink.emit(event)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s %s%s", event.request_id, kind, name, f" ({error})" if error else "")

    def emit_effect(self, kind: EventKind, name: str, started: float, error: str | None) -> None:
        self.emit(kind, name, started=started, error=error)

    outside: asyncio.CancelledError | None = None
    """A cancellation from outside that landed at the deadline: the lifecycle ends as for the
    deadline (catch hooks, undo steps), and the cancellation is raised once it has."""

    async def run(self) -> Any:
        token = self.lctx._begin(self.call.request, self.emit_effect)
        started = time.perf_counter()
        self.emit("lifecycle_start", self.meta.handler)
        try:
            try:
                response = await self.within_deadline()
            except BaseException as exc:
                await to_the_end(self.end(exc, started))
                raise  # end() raises; this line is for the type checker
            if self.ends_at_once():
                self.emit("lifecycle_end", self.meta.handler, started=started)
            else:
                await to_the_end(self.end(None, started))
            return response
        finally:
            self.lctx._end(token)

    def ends_at_once(self) -> bool:
        """Nothing is left to await once the handler answered: no task, no cleanup, no snapshot."""
        return not self.lctx._has_leftovers() and not self.snapshot_due(refused=False)

    async def end(self, failure: BaseException | None, started: float) -> None:
        """Catch hooks and undo steps (after a failure), cleanup, ``lifecycle_end``, the snapshot;
        then ``failure`` (or what the ending itself raised) is raised again.

        Run by :func:`to_the_end`: no cancellation from outside cuts any of it short.
        """
        try:
            try:
                if failure is not None:
                    await self.unwind(failure)
                    if self.outside is not None:
                        raise self.outside
                    raise failure
            finally:
                try:
                    await self.close()
                finally:
                    error = None if failure is None else describe_error(failure)
                    self.emit("lifecycle_end", self.meta.handler, started=started, error=error)
        finally:
            await self.store_snapshot(refused=isinstance(failure, ValidationFailed))

    async def within_deadline(self) -> Any:
        deadline = self.meta.deadline
        if deadline is None:
            return await self.body()
        if deadline.expired():
            raise DeadlineExceeded(
                f"{self.meta.handler}: the deadline passed before the call started"
            )
        expiry = Expiry(deadline)
        try:
            return await self.body()
        except asyncio.CancelledError as exc:
            if expiry.alone():
                raise DeadlineExceeded(f"{self.meta.handler}: deadline exceeded") from None
            # A transport cancels the call at the same deadline (whichever timer fired first, or
            # both): that is the deadline, not a caller who went away.
            if expiry.fired or deadline.remaining() <= DEADLINE_SLACK:
                self.outside = exc
                raise DeadlineExceeded(f"{self.meta.handler}: deadline exceeded") from exc
            raise
        finally:
            expiry.cancel()

    async def body(self) -> Any:
        request = self.call.request
        stream = self.call.stream
        for hook in self.hooks("before"):
            await self.hook(hook, (self.lctx, request))
        if stream is None:
            self.check_request(request, "request")
            response = await self.handler(request)
            self.check_response(response, "response")
        else:
            response = await self.streamed(stream, request)
        for hook in self.hooks("after"):
            await self.hook(hook, (self.lctx, request, response))
        return response

    async def streamed(self, stream: Stream, request: Any) -> Any:
        """The handler of a streaming call, its messages validated each way; the response, or
        None once a streamed response has been sent."""
        messages = None
        if stream.requests is None:
            self.check_request(request, "request")
            stream.received = 1
        else:
            request = messages = self.received(stream, stream.requests)
        try:
            response = await self.handler(request)
            if stream.send is None:
                self.check_response(response, "response")
            else:
                await self.send_all(stream, stream.send, response)
                response = None
        finally:
            if messages is not None:  # a handler that stopped reading early lets go of the rest
                await messages.aclose()
        if self.bad_request is not None:  # the handler caught it; the call fails all the same
            raise self.bad_request
        return response

    def check_request(self, request: Any, what: str) -> None:
        if self.call.validate_request is not None:
            try:
                self.call.validate_request(request)
            except ValidationFailed as exc:
                self.emit("validation_error", what, error=_violations(exc))
                raise

    def check_response(self, response: Any, what: str) -> None:
        if self.call.validate_response is not None:
            try:
                self.call.validate_response(response)
            except ValidationFailed as exc:
                details = _violations(exc)
                self.emit("validation_error", what, error=details)
                logger.error(
                    "request %s: the %s of %s failed validation: %s",
                    self.meta.request_id,
                    what,
                    self.meta.handler,
                    details,
                )
                raise InternalError(f"{what} failed validation") from exc

    bad_request: ValidationFailed | None = None
    """A request message that failed validation, kept in case the handler swallows the error."""

    async def received(self, stream: Stream, requests: AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
        """The request messages as the handler reads them, each validated first."""
        async for message in requests:
            try:
                self.check_request(message, f"request message {stream.received + 1}")
            except ValidationFailed as exc:
                self.bad_request = exc
                raise
            stream.received += 1
            yield message

    async def send_all(self, stream: Stream, send: Callable[[Any], Awaitable[None]], response: Any) -> None:
        """Take each response message from the handler, validate it and send it; the handler's
        next message is asked for only once ``send`` returned."""
        started = time.perf_counter()
        messages = aiter(response)
        try:
            while True:
                try:
                    message = await anext(messages)
                except StopAsyncIteration:
                    break
                except BaseException as exc:
                    self.emit("handler_error", self.meta.handler, started=started, error=describe_error(exc))
                    raise
                self.check_response(message, f"response message {stream.sent + 1}")
                await send(message)
                stream.sent += 1
        finally:
            # Closed here, in this task: the handler's own ``finally`` runs now, not whenever
            # the generator happens to be collected.
            close = getattr(messages, "aclose", None)
            if close is not None:
                await close()
        self.emit("handler_end", self.meta.handler, started=started)

    def hooks(self, phase: Phase) -> Sequence[HookSpec]:
        request_hooks = self.lctx.hooks
        if not self.call.hooks and not request_hooks:
            return ()
        return ordered([*self.call.hooks, *request_hooks], phase)

    async def hook(self, spec: HookSpec, args: tuple[Any, ...]) -> None:
        self.lctx._hook_started()
        started = time.perf_counter()
        self.emit("hook_start", spec.id)
        try:
            await run_hook(spec, args)
        except BaseException as exc:
            self.emit("hook_error", spec.id, started=started, error=describe_error(exc))
            raise
        self.emit("hook_end", spec.id, started=started)

    async def handler(self, request: Any) -> Any:
        started = time.perf_counter()
        self.emit("handler_start", self.meta.handler)
        try:
            response = await call_any(self.call.handler, request, self.lctx, self.call.gctx)
        except BaseException as exc:
            self.emit(
                "handler_error", self.meta.handler, started=started, error=describe_error(exc)
            )
            raise
        stream = self.call.stream
        if stream is None or stream.send is None:  # a streamed response ends in send_all
            self.emit("handler_end", self.meta.handler, started=started)
        return response

    async def unwind(self, failure: BaseException) -> None:
        """Catch hooks (for errors) and undo steps; a second cancellation is held until the end.

        Holding a ``CancelledError`` that arrives mid-way lets every remaining step run, and
        re-raising it afterwards keeps the cancellation: nothing here swallows it.
        """
        cancelled: asyncio.CancelledError | None = None
        if isinstance(failure, Exception):
            for spec in self.hooks("catch"):
                try:
                    await self.hook(spec, (self.lctx, self.call.request, failure))
                except asyncio.CancelledError as exc:
                    cancelled = cancelled or exc
                except Exception:
                    logger.exception(
                        "request %s: catch hook %s failed while handling %s",
                        self.meta.request_id,
                        spec.id,
                        describe_error(failure),
                    )
        for step in reversed(self.lctx._take_compensations()):
            started = time.perf_counter()
            try:
                await call_with_timeout(step.fn, (), step.timeout, f"undo step {step.name!r}")
            except asyncio.CancelledError as exc:
                cancelled = cancelled or exc
                self.emit("compensation_error", step.name, started=started, error="cancelled")
            except Exception as exc:
                error = describe_error(exc)
                self.emit("compensation_error", step.name, started=started, error=error)
                self.emit("alert", step.name, error=f"undo step failed: {error}")
                logger.error(
                    "request %s: undo step %s failed: %s", self.meta.request_id, step.name, error
                )
            else:
                self.emit("compensation", step.name, started=started)
        if cancelled is not None:
            raise cancelled

    async def close(self) -> None:
        """Cancel leftover tasks, then run every cleanup callback, newest first."""
        cancelled: asyncio.CancelledError | None = None
        try:
            await self.lctx._settle_tasks()
        except asyncio.CancelledError as exc:
            cancelled = exc
        for fn in reversed(self.lctx._take_cleanups()):
            name = callable_name(fn)
            started = time.perf_counter()
            try:
                await call_any(fn)
            except asyncio.CancelledError as exc:
                cancelled = cancelled or exc
                self.emit("cleanup", name, started=started, error="cancelled")
            except Exception as exc:
                self.emit("cleanup", name, started=started, error=describe_error(exc))
                logger.exception("request %s: cleanup %s failed", self.meta.request_id, name)
            else:
                self.emit("cleanup", name, started=started)
        if cancelled is not None:
            raise cancelled

    def snapshot_due(self, *, refused: bool) -> bool:
        return (
            self.call.snapshots is not None
            and self.call.stream is None
            and should_snapshot(self.meta, self.call.snapshot_policy, refused=refused)
        )

    async def store_snapshot(self, *, refused: bool) -> None:
        store = self.call.snapshots
        if store is None or not self.snapshot_due(refused=refused):
            return
        try:
            await store.save(self.lctx.snapshot())
        except Exception as exc:
            error = describe_error(exc)
            self.emit("alert", "snapshot", error=f"snapshot not stored: {error}")
            logger.error("request %s: snapshot not stored: %s", self.meta.request_id, error)


DEADLINE_SLACK = 0.05
"""A cancellation from outside this close to the deadline (seconds) is the deadline's."""


async def to_the_end(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` in a task of its own and wait for it, whatever cancels the caller meanwhile.

    The ending of a request (undo steps, cleanup, the snapshot) must not be cut short: a step
    interrupted half-way is worse than one never started. A cancellation of the caller is held
    while ``work`` runs, then raised in its place. Only a request that has something to undo or
    clean up pays for the task; the common ending runs in line.
    """
    task = asyncio.ensure_future(work)
    held: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError as exc:
            held = held or exc
    if held is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the caller is gone, what the ending raised is audited
        raise held
    return task.result()


def _violations(exc: ValidationFailed) -> str:
    if not exc.violations:
        return exc.message
    return f"{exc.message}: " + "; ".join(v.describe() for v in exc.violations)
