"""A traced test endpoint: what a worker's endpoint does with spans, around a plain function.

Servers in tests serve it through :func:`runtime.transport.unary_handler`, so calls reach it by
the same path a worker's endpoints are reached, and its span is opened inline by
:class:`~runtime.observability.ServerTracer` exactly as a worker's is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from runtime.deadline import Deadline
from runtime.observability import ServerTracer
from runtime.status import RpcStatus
from runtime.transport import CallError, MetadataIn, Reply, unary_handler

Behaviour = Callable[[bytes, dict[str, str]], Awaitable[bytes]]


def traced_handler(tracer: ServerTracer, path: str, behaviour: Behaviour) -> grpc.RpcMethodHandler[bytes, bytes]:
    """A gRPC handler whose endpoint opens a server span around ``behaviour``.

    ``behaviour`` gets the request bytes and the text metadata; raising :class:`CallError`
    ends the call with that status.
    """

    async def endpoint(payload: bytes, metadata: MetadataIn, deadline: Deadline | None) -> Reply:
        headers = {k: v for k, v in metadata if isinstance(v, str)}
        span, token = tracer.start(path, headers)
        code: grpc.StatusCode | None = grpc.StatusCode.OK
        details = None
        try:
            return await behaviour(payload, headers), (("x-request-id", headers.get("x-request-id", "r")),)
        except CallError as exc:
            code, details = exc.code, exc.details
            raise
        except BaseException:
            code = None
            raise
        finally:
            ServerTracer.end(span, token, code, details)

    return unary_handler(endpoint)


def abort(code: grpc.StatusCode, details: str) -> CallError:
    """The error a test endpoint raises to end its call with ``code``."""
    return CallError(RpcStatus(code, details, (("x-request-id", "r"),)))
