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

__all__ = ["MAX_LISTED", "HealthService"]

MAX_LISTED = 100
"""The most services one List answers (the protocol's advice, so the answer stays small)."""


class HealthService(HealthServicer):  # type: ignore[misc]
    """grpc's asyncio health servicer, with List."""

    async def List(self, request: health_pb2.HealthListRequest, context: Any) -> health_pb2.HealthListResponse:
        statuses = dict(self._server_status)
        if len(statuses) > MAX_LISTED:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server knows {len(statuses)} services, more than the {MAX_LISTED} one List answers",
            )
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses.items()}
        )
