"""The answer to a method the gateway does not route: UNIMPLEMENTED, with a request id, counted.

grpc's own answer to an unknown path is a bare ``Method not found!``: no ``x-request-id`` to
quote in a report, nothing in the metrics, so a client probing for methods (or one built against
a module that is not deployed) is invisible. This handler is registered after every service, so
it sees only what nothing else serves; it never reads the request, whatever kind of call it is.

The path is not a metric label (a caller chooses it, so its values are unbounded): every unknown
call counts under the one method label ``(unknown method)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import grpc
import grpc.aio

from runtime.gateway._public import Admission
from runtime.identity import request_id_of
from runtime.observability import RedMetrics
from runtime.status import REQUEST_ID_KEY

__all__ = ["UNKNOWN_METHOD_LABEL", "UnknownMethods"]

log = logging.getLogger("modrpc.gateway")

UNKNOWN_METHOD_LABEL = "(unknown method)"
_SHOWN = 200
"""Characters of an unknown path quoted back and logged."""


class UnknownMethods(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A catch-all generic handler: register it last. With ``admission``, each call counts
    against its address's ``unrouted_rate_limit`` first: anyone may call unknown methods, and
    each costs the gateway about what a health check does."""

    def __init__(self, red: RedMetrics | None, admission: Admission | None = None) -> None:
        self._red = red
        self._admission = admission

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes]:
        path = str(handler_call_details.method)[:_SHOWN]

        async def answer(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
        ) -> AsyncIterator[bytes]:
            async for chunk in self._answer(path, context):
                yield chunk

        return grpc.stream_stream_rpc_method_handler(answer)

    async def _answer(
        self, path: str, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        if self._admission is not None:
            await self._admission.limit(context)
        headers = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        request_id = request_id_of(headers.get(REQUEST_ID_KEY))
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        # DEBUG: anyone may send these, as fast as they like; the metric counts them.
        log.debug("call %s to unknown method %r", request_id, path)
        if self._red is not None:
            self._red.observe(UNKNOWN_METHOD_LABEL, "unresolved", "UNIMPLEMENTED", time.perf_counter() - started)
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"unknown method {path}: no module served by this gateway has it "
            f"(request id {request_id})",
        )
        yield b""  # never reached: abort raises; the yield makes this a streaming handler

