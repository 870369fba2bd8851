"""One served method: bytes in, the request lifecycle, bytes out.

Everything that can be worked out once per method is worked out in the constructor (message
names, the type adapters, the schema nodes validation walks, hooks, policy), so a call only
does the work that depends on the call.

A streaming method is served by :meth:`MethodEndpoint.stream`: one lifecycle for the whole
stream, run by the task of a :class:`~runtime.transport.ProducedStream`, which takes each
response message (converted for the caller's version, like a unary response) only as fast as
the caller reads them. Closing the stream (the caller went away) cancels the lifecycle and waits
for its cleanup.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import typing
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pydantic
from pydantic import TypeAdapter

from runtime.context import (
    GlobalContext,
    current_batch,
    current_deadline,
    current_principal,
    current_request_id,
)
from runtime.deadline import Deadline
from runtime.errors import (
    Cancelled,
    DeadlineExceeded,
    InternalError,
    InvalidArgument,
    ModrpcError,
    Unimplemented,
    ValidationFailed,
)
from runtime.gtype import FieldViolation, Schema, compiled, stream_item, validate
from runtime.identity import PRINCIPAL_HEADER, Peer, Principal, current_peer, request_id_of
from runtime.lcc import (
    DEADLINE_SLACK,
    HookSpec,
    LifecycleCall,
    LifecycleEvent,
    LocalContext,
    MemoryEventSink,
    RequestMeta,
    SnapshotStore,
    Stream,
    parse_flags,
    permitted_flags,
    run_lifecycle,
)
from runtime.manifest import HandlerSpec, MethodPolicy
from runtime.observability import (
    HANDLER_ATTRIBUTE,
    REQUEST_ID_ATTRIBUTE,
    VERSION_ATTRIBUTE,
    ServerTracer,
    handler_var,
    version_var,
)
from runtime.status import REQUEST_ID_KEY, describe_violation, rpc_status_of
from runtime.transport import (
    CallError,
    MessageQueue,
    Metadata,
    MetadataIn,
    ProducedStream,
    Reply,
    StreamCall,
)
from runtime.versions import Conversion, VersionCatalog, plan
from runtime.wire import method_path
from runtime.worker._admission import Admission

__all__ = ["CallObserver", "MethodEndpoint", "RemovedMethod"]

log = logging.getLogger("modrpc.worker")

class CallObserver(typing.Protocol):
    """Told about every call's lifecycle starting and finishing: metrics and the audit trail
    hang off this. Every ``started`` is followed by exactly one ``finished``."""

    def started(self) -> None: ...

    def finished(
        self,
        meta: RequestMeta,
        events: Sequence[Any],
        error: BaseException | None,
        started: float,
        messages: tuple[int, int] | None = None,
    ) -> None:
        """``messages``: (received, sent) message counts of a streaming call; None for unary."""
        ...


def _violations_from_pydantic(exc: pydantic.ValidationError) -> list[FieldViolation]:
    out = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        out.append(FieldViolation(path=path, expected=err["msg"], actual=err.get("input")))
    return out


@dataclass(frozen=True)
class _Types:
    request: TypeAdapter[Any]
    response: TypeAdapter[Any]


def _handler_types(spec: HandlerSpec) -> _Types:
    """The adapters of one request and one response message (of a stream's items, for a stream)."""
    hints = typing.get_type_hints(spec.function)
    params = list(hints)
    request_type: Any = stream_item(hints[params[0]])[0]
    response_type: Any = stream_item(hints["return"])[0]
    return _Types(TypeAdapter(request_type), TypeAdapter(response_type))


async def _only_message(requests: AsyncIterable[bytes], method: str) -> bytes:
    """The one request message of a server-streaming call (read up to the caller's half-close)."""
    iterator = aiter(requests)
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        raise InvalidArgument(f"{method} takes one request message; the stream ended with none") from None
    try:
        await anext(iterator)
    except StopAsyncIteration:
        return first
    raise InvalidArgument(f"{method} takes one request message; more than one was sent")


class MethodEndpoint:
    """The served form of one handler."""

    def __init__(
        self,
        *,
        module: str,
        spec: HandlerSpec,
        policy: MethodPolicy,
        catalog: VersionCatalog,
        served: str,
        gctx: GlobalContext,
        hooks: Sequence[HookSpec],
        snapshots: SnapshotStore | None,
        redact: Callable[[Any], Any] | None,
        observer: CallObserver | None,
        hop_timeout: float,
        admission: Admission,
        tracing: ServerTracer | None = None,
        snapshot_roles: frozenset[str] | None = None,
    ) -> None:
        self.module = module
        self.spec = spec
        self.method = spec.method
        self.path = method_path(module, spec.method)
        self.policy = policy
        self.catalog = catalog
        self.served = served
        self.gctx = gctx
        self.hooks = tuple(hooks)
        self.snapshots = snapshots
        self.redact = redact
        self.observer = observer
        self.hop_timeout = hop_timeout
        self.admission = admission
        self.snapshot_roles = snapshot_roles
        self.tracing = tracing or ServerTracer()
        schema: Schema = catalog.by_id[served].schema
        self.schema = schema
        m = schema.method(spec.method)
        self.request_node = schema.resolve(m.request)
        self.response_node = schema.resolve(m.response)
        # Most messages are valid: the compiled checks say so in one pass, and validate() runs
        # only for the full report of one that is not.
        self._request_valid = compiled(self.request_node, schema)
        self._response_valid = compiled(self.response_node, schema)
        self.types = _handler_types(spec)
        self.client_streaming = m.client_streaming
        self.server_streaming = m.server_streaming
        self.timeout = policy.timeout
        self._served_conversion = Conversion(catalog, spec.method, served, served)
        self._conversions: dict[str, Conversion] = {}

    # -- the lifecycle's callables --------------------------------------------------------------
    def validate_request(self, request: Any) -> None:
        if self._request_valid(request):
            return
        problems = validate(request, self.request_node, self.schema)
        if problems:
            listed = "; ".join(describe_violation(p) for p in problems[:5])
            raise ValidationFailed(f"invalid {self.spec.handler_id} request: {listed}", problems)

    def validate_response(self, response: Any) -> None:
        if self._response_valid(response):
            return
        problems = validate(response, self.response_node, self.schema)
        if problems:
            log.error(
                "handler %s returned an invalid response: %s",
                self.spec.handler_id,
                "; ".join(p.describe() for p in problems),
            )
            raise ValidationFailed("response failed validation", problems)

    def _model(self, request: Any) -> Any:
        """A validated request value as the handler's request type."""
        try:
            return self.types.request.validate_python(request)
        except pydantic.ValidationError as exc:
            problems = _violations_from_pydantic(exc)
            raise ValidationFailed(
                f"invalid {self.spec.handler_id} request: "
                + "; ".join(describe_violation(p) for p in problems[:5]),
                problems,
            ) from None

    def _dump(self, result: Any) -> Any:
        """A handler's response object as a value validation and the codec read."""
        try:
            return self.types.response.dump_python(result, mode="python")
        except (pydantic.ValidationError, TypeError, ValueError) as exc:
            log.error("handler %s returned %r, not its response type: %s", self.spec.handler_id, type(result), exc)
            raise InternalError("response has the wrong type") from exc

    async def _run_handler(self, request: Any, lctx: LocalContext, gctx: Any) -> Any:
        model = self._model(request)
        if self.spec.is_async:
            result = await self.spec.function(model, lctx, gctx)
        else:
            result = await asyncio.to_thread(self.spec.function, model, lctx, gctx)
        return self._dump(result)

    async def _run_stream_handler(self, request: Any, lctx: LocalContext, gctx: Any) -> Any:
        """The handler of a streaming method: models in (one, or a stream), values out (one, or
        a stream the lifecycle iterates)."""
        argument = self._models(request) if self.client_streaming else self._model(request)
        result = self.spec.function(argument, lctx, gctx)
        if inspect.isawaitable(result):
            result = await result
        if not self.server_streaming:
            return self._dump(result)
        if not hasattr(result, "__aiter__"):
            log.error("handler %s returned %r, not an async iterator", self.spec.handler_id, type(result))
            raise InternalError("the handler's response is not a stream")
        return self._dumped(result)

    async def _models(self, values: AsyncIterable[Any]) -> AsyncIterator[Any]:
        async for value in values:
            yield self._model(value)

    async def _dumped(self, results: Any) -> AsyncIterator[Any]:
        try:
            async for result in results:
                yield self._dump(result)
        finally:
            close = getattr(results, "aclose", None)
            if close is not None:  # the handler's own cleanup runs now, in the lifecycle's task
                await close()

    # -- the call ---------------------------------------------------------------------------------
    def conversion(self, version: str) -> Conversion:
        """How a call at ``version`` reaches the served version (built once per version)."""
        conversion = self._conversions.get(version)
        if conversion is None:
            planned = plan(self.catalog, self.method, version, (self.served,), hop_timeout=self.hop_timeout)
            if planned is None:
                raise Unimplemented(
                    f"{self.module} version {version} is not served here and no transformer chain "
                    f"leads from it to {self.served}"
                )
            conversion = planned[1] or self._served_conversion
            if len(self._conversions) < 64:  # bounded by the module's versions
                self._conversions[version] = conversion
        return conversion

    async def serve(self, payload: bytes, metadata: MetadataIn, deadline: Deadline | None) -> Reply:
        """Serve one call, however it came (gRPC, the lane, or in process): the call contract."""
        started = time.perf_counter()
        headers = {k: v for k, v in metadata if isinstance(v, str)}
        request_id = request_id_of(headers.get(REQUEST_ID_KEY))
        # In the trailers, with the status: headers sent on their own would cost grpc.aio a batch
        # of their own (~40 us per call, a quarter of the cheapest call).
        trailers: Metadata = ((REQUEST_ID_KEY, request_id),)
        # The server span, opened here rather than by an interceptor (which grpc.aio runs as an
        # extra coroutine per call): it continues the caller's trace, and the lifecycle's task
        # inherits it as the current span.
        span, span_token = self.tracing.start(
            self.path, headers, {REQUEST_ID_ATTRIBUTE: request_id, HANDLER_ATTRIBUTE: self.spec.handler_id}
        )
        code: grpc.StatusCode | None = grpc.StatusCode.OK
        details: str | None = None
        meta: RequestMeta | None = None
        sink = MemoryEventSink()
        error: BaseException | None = None
        try:
            peer = current_peer.get()
            try:
                principal = self.admission.principal(peer, headers.get(PRINCIPAL_HEADER), self.policy)
            except ModrpcError as refusal:
                self._refused(request_id, peer, refusal, started)
                raise
            version = self.catalog.resolve(headers.get("x-api-version"))
            span.set_attribute(VERSION_ATTRIBUTE, version)
            conversion = self.conversion(version)
            deadline = Deadline.earliest(deadline, Deadline.after(self.timeout))
            request = await conversion.request(payload, deadline)
            meta = RequestMeta(
                request_id=request_id,
                handler=self.spec.handler_id,
                method=self.path,
                version=self.served,
                flags=permitted_flags(parse_flags(headers.get("x-flags")), principal.roles, self.snapshot_roles),
                deadline=deadline,
                principal=principal,
            )
            if self.observer is not None:
                self.observer.started()  # finished() follows in the finally below: meta is set
            lctx = LocalContext(meta, redact=self.redact)
            gctx = self.gctx
            batch = gctx.begin_call()
            rid_token = current_request_id.set(request_id)
            handler_token = handler_var.set(self.spec.handler_id)
            version_token = version_var.set(self.served)
            deadline_token = current_deadline.set(deadline)
            batch_token = current_batch.set(batch)
            principal_token = current_principal.set(principal)
            try:
                # In this call's own task: the lifecycle keeps its ending (undo steps, cleanup)
                # from being cut short by the transport's cancellation (``to_the_end``).
                response = await run_lifecycle(
                    LifecycleCall(
                        handler=self._run_handler,
                        request=request,
                        lctx=lctx,
                        gctx=self.gctx,
                        hooks=self.hooks,
                        validate_request=self.validate_request,
                        validate_response=self.validate_response,
                        sink=sink,
                        snapshots=self.snapshots,
                        snapshot_policy=self.policy.snapshot,
                    )
                )
            finally:
                current_request_id.reset(rid_token)
                handler_var.reset(handler_token)
                version_var.reset(version_token)
                current_deadline.reset(deadline_token)
                current_principal.reset(principal_token)
                current_batch.reset(batch_token)
            if batch is not None and batch.messages:
                # The handler succeeded: its events are made durable before the caller hears so.
                await gctx.commit(batch, deadline)
            return await conversion.response(response, deadline), trailers
        except asyncio.CancelledError:
            # The caller went away or its deadline passed; audit and metrics record which, not
            # the INTERNAL that a bare CancelledError maps to.
            code = None
            if meta is not None and meta.deadline is not None and meta.deadline.remaining() <= DEADLINE_SLACK:
                error = DeadlineExceeded(f"{self.spec.handler_id}: deadline exceeded")
            else:
                error = Cancelled(f"{self.spec.handler_id}: the caller cancelled the call")
            raise
        except Exception as exc:
            error = exc
            if not isinstance(exc, ModrpcError) or isinstance(exc, InternalError):
                log.error("call %s %s failed: %s", request_id, self.spec.handler_id, exc, exc_info=exc)
            status = rpc_status_of(exc, request_id)
            code, details = status.code, status.details
            raise CallError(status) from exc
        finally:
            ServerTracer.end(span, span_token, code, details)
            if self.observer is not None and meta is not None:
                self.observer.finished(meta, sink.events, error, started)

    # -- a streaming call ---------------------------------------------------------------------------
    def stream(self, requests: AsyncIterable[bytes], metadata: MetadataIn, deadline: Deadline | None) -> StreamCall:
        """Serve one streaming call, however it came: the call contract's stream.

        The method's timeout caps the stream's whole life, as it caps a unary call.
        """
        deadline = Deadline.earliest(deadline, Deadline.after(self.timeout))

        def cancel_ok() -> bool:
            return deadline is None or deadline.remaining() > DEADLINE_SLACK

        async def produce(out: MessageQueue) -> Metadata:
            return await self._serve_stream(requests, metadata, deadline, out)

        return ProducedStream(produce, cancel_ok=cancel_ok)

    async def _serve_stream(
        self, requests: AsyncIterable[bytes], metadata: MetadataIn, deadline: Deadline | None, out: MessageQueue
    ) -> Metadata:
        started = time.perf_counter()
        headers = {k: v for k, v in metadata if isinstance(v, str)}
        request_id = request_id_of(headers.get(REQUEST_ID_KEY))
        trailers: Metadata = ((REQUEST_ID_KEY, request_id),)
        span, span_token = self.tracing.start(
            self.path, headers, {REQUEST_ID_ATTRIBUTE: request_id, HANDLER_ATTRIBUTE: self.spec.handler_id}
        )
        code: grpc.StatusCode | None = grpc.StatusCode.OK
        details: str | None = None
        meta: RequestMeta | None = None
        sink = MemoryEventSink()
        error: BaseException | None = None
        stream = Stream()
        try:
            peer = current_peer.get()
            try:
                principal = self.admission.principal(peer, headers.get(PRINCIPAL_HEADER), self.policy)
            except ModrpcError as refusal:
                self._refused(request_id, peer, refusal, started)
                raise
            version = self.catalog.resolve(headers.get("x-api-version"))
            span.set_attribute(VERSION_ATTRIBUTE, version)
            conversion = self.conversion(version)
            request: Any = None
            if self.client_streaming:
                stream.requests = self._decoded(requests, conversion, deadline)
            else:
                request = await conversion.request(await _only_message(requests, self.path), deadline)
            if self.server_streaming:

                async def send(value: Any) -> None:
                    await out.put(await conversion.response(value, deadline))

                stream.send = send
            meta = RequestMeta(
                request_id=request_id,
                handler=self.spec.handler_id,
                method=self.path,
                version=self.served,
                flags=permitted_flags(parse_flags(headers.get("x-flags")), principal.roles, self.snapshot_roles),
                deadline=deadline,
                principal=principal,
            )
            if self.observer is not None:
                self.observer.started()
            current_request_id.set(request_id)  # this task's own context: nothing to reset
            current_principal.set(principal)
            handler_var.set(self.spec.handler_id)
            version_var.set(self.served)
            current_deadline.set(deadline)
            response = await run_lifecycle(
                LifecycleCall(
                    handler=self._run_stream_handler,
                    request=request,
                    lctx=LocalContext(meta, redact=self.redact),
                    gctx=self.gctx,
                    hooks=self.hooks,
                    validate_request=self.validate_request,
                    validate_response=self.validate_response,
                    sink=sink,
                    stream=stream,
                )
            )
            if not self.server_streaming:
                await out.put(await conversion.response(response, deadline))
                stream.sent = 1
            return trailers
        except asyncio.CancelledError:
            code = None
            if meta is not None and meta.deadline is not None and meta.deadline.remaining() <= DEADLINE_SLACK:
                error = DeadlineExceeded(f"{self.spec.handler_id}: deadline exceeded")
            else:
                error = Cancelled(f"{self.spec.handler_id}: the caller cancelled the call")
            raise
        except Exception as exc:
            error = exc
            if not isinstance(exc, ModrpcError) or isinstance(exc, InternalError):
                log.error("call %s %s failed: %s", request_id, self.spec.handler_id, exc, exc_info=exc)
            status = rpc_status_of(exc, request_id)
            code, details = status.code, status.details
            raise CallError(status) from exc
        finally:
            ServerTracer.end(span, span_token, code, details)
            if self.observer is not None and meta is not None:
                self.observer.finished(meta, sink.events, error, started, (stream.received, stream.sent))

    def _refused(self, request_id: str, peer: Peer | None, refusal: ModrpcError, started: float) -> None:
        """Log and audit a call the worker would not serve: who knocked, and why it was turned away."""
        who = str(peer) if peer is not None else "unauthenticated"
        log.warning("refused %s %s from %s: %s", request_id, self.spec.handler_id, who, refusal.message)
        if self.observer is None:
            return
        meta = RequestMeta(
            request_id=request_id,
            handler=self.spec.handler_id,
            method=self.path,
            version=self.served,
            principal=Principal(subject=who, method="anonymous"),
        )
        event = LifecycleEvent(
            kind="refused",
            name=who,
            request_id=request_id,
            handler=self.spec.handler_id,
            at=time.time(),
            error=f"{type(refusal).__name__}: {refusal.message}",
        )
        self.observer.started()
        self.observer.finished(meta, (event,), refusal, started)

    @staticmethod
    async def _decoded(requests: AsyncIterable[bytes], conversion: Conversion, deadline: Deadline | None) -> AsyncIterator[Any]:
        """A stream's request messages as values of the served version, each converted as it
        arrives (a transformer for the request applies to every message)."""
        async for payload in requests:
            yield await conversion.request(payload, deadline)

_OPEN_POLICY = MethodPolicy()
"""The policy a removed method is admitted by: who may call this worker at all (its own roles
went with the version that removed it)."""


class RemovedMethod:
    """A method an earlier recorded version of the module had and the served version does not.

    A caller still pinned to that version (or one that just called the wrong version) hears
    UNIMPLEMENTED naming the version that removed the method, over gRPC, the lane or in
    process alike, as the gateway answers it (SPEC §4), rather than grpc's bare
    "Method not found!": the one conversion pipeline (:func:`~runtime.versions.plan`) refuses
    it. An ``x-api-version`` that resolves to nothing is refused as for any method. A removed
    streaming method is refused as a stream, the kind of call its callers make. Admission comes
    first, as for a served method: a caller the worker would not serve learns nothing of it.
    """

    __slots__ = (
        "admission", "catalog", "client_streaming", "method", "module", "path", "served", "server_streaming",
    )  # fmt: skip

    def __init__(self, *, module: str, method: str, catalog: VersionCatalog, served: str, admission: Admission) -> None:
        self.admission = admission
        self.module = module
        self.method = method
        self.path = method_path(module, method)
        self.catalog = catalog
        self.served = served
        self.client_streaming = self.server_streaming = False
        for info in reversed(catalog.versions):  # its shape where it was last recorded
            found = next((m for m in info.schema.methods if m.name == method), None)
            if found is not None:
                self.client_streaming, self.server_streaming = found.client_streaming, found.server_streaming
                break

    async def _refusal(self, metadata: MetadataIn, deadline: Deadline | None) -> CallError:
        headers = {k: v for k, v in metadata if isinstance(v, str)}
        request_id = request_id_of(headers.get(REQUEST_ID_KEY))
        try:
            self.admission.principal(current_peer.get(), headers.get(PRINCIPAL_HEADER), _OPEN_POLICY)
            version = self.catalog.resolve(headers.get("x-api-version"))
            planned = plan(self.catalog, self.method, version, (self.served,))
            # The served version lacks the method, so the conversion refuses the call.
            assert planned is not None and planned[1] is not None, f"{self.path} is served at {self.served}"
            await planned[1].request(b"", deadline)
            raise AssertionError(f"{self.path} is not served at {self.served}, yet its conversion passed")
        except ModrpcError as exc:  # the refusal, or an unparsable or unknown version
            return CallError(rpc_status_of(exc, request_id))

    async def serve(self, payload: bytes, metadata: MetadataIn, deadline: Deadline | None) -> Reply:
        raise await self._refusal(metadata, deadline)

    def stream(self, requests: AsyncIterable[bytes], metadata: MetadataIn, deadline: Deadline | None) -> StreamCall:
        async def produce(out: MessageQueue) -> Metadata:
            raise await self._refusal(metadata, deadline)

        return ProducedStream(produce, cancel_ok=lambda: True)
