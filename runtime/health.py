"""``grpc.health.v1.Health`` for every server of the runtime: Check, Watch and List.

grpc's asyncio servicer implements Check and Watch; its List, inherited from the generated base
class, answers UNIMPLEMENTED with "Method not implemented!" from Python code that has no
business being reached. :class:`HealthService` answers List as the health protocol says: every
service this server knows with its status, or RESOURCE_EXHAUSTED past :data:`MAX_LISTED`.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer  # what `health.aio` names, visible to mypy

from runtime.identity import request_id_of
from runtime.status import REQUEST_ID_KEY
from runtime.transport import Metadata

__all__ = ["MAX_LISTED", "HealthService"]

MAX_LISTED = 100
"""The most services one List answers (the protocol's advice, so the answer stays small)."""


def _answered_with_request_id(context: Any) -> Metadata:
    """The call's ``x-request-id`` (the caller's when well formed, else a new one), set as the
    answer's trailer as every other answer of the runtime carries it; returned for an abort."""
    sent = next((str(v) for k, v in context.invocation_metadata() or () if k == REQUEST_ID_KEY), None)
    trailers: Metadata = ((REQUEST_ID_KEY, request_id_of(sent)),)
    context.set_trailing_metadata(trailers)
    return trailers


class HealthService(HealthServicer):  # type: ignore[misc]
    """grpc's asyncio health servicer, with List, an ``x-request-id`` on every answer, and a
    Check of an unknown service that names it."""

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        trailers = _answered_with_request_id(context)
        status = self._server_status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}", trailers)
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        _answered_with_request_id(context)
        await super().Watch(request, context)

    async def List(self, request: health_pb2.HealthListRequest, context: Any) -> health_pb2.HealthListResponse:
        trailers = _answered_with_request_id(context)
        statuses = dict(self._server_status)
        if len(statuses) > MAX_LISTED:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server knows {len(statuses)} services, more than the {MAX_LISTED} one List answers",
                trailers,
            )
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses.items()}
        )
