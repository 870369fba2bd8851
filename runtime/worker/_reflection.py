"""Server reflection on a worker that follows the caller's ``x-api-version``.

A worker serves every version of its module that a transformer chain reaches, so a caller
pinned to an old version sends the old message shapes. grpcurl builds the request from what
reflection describes; describing only the newest version would make it refuse the old fields
(``message type users.v1.CreateUserRequest has no known field named name``) before the call
is even sent. So reflection answers with the descriptors of the version the header resolves
to, exactly as the gateway's reflection does, and with none the default version (``stable``,
else ``latest``).

``google.rpc`` error details are described too, so grpcurl prints the field violations of an
INVALID_ARGUMENT instead of "google.rpc.BadRequest is not recognized".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from runtime.errors import ExpectedError
from runtime.status import rpc_status_of
from runtime.versions import VersionCatalog
from runtime.wire import serving_pool

__all__ = ["VersionedReflection"]


class VersionedReflection(reflection_pb2_grpc.ServerReflectionServicer):  # type: ignore[misc]
    """``grpc.reflection.v1alpha`` for one module: descriptors of the caller's resolved version.

    One servicer (and descriptor pool) is built per version on first use and kept: a module has
    few versions, and the request path never rebuilds a pool.
    """

    def __init__(self, catalog: VersionCatalog, services: Sequence[str]) -> None:
        self._catalog = catalog
        self._services = sorted(services)
        self._servicers: dict[str, ReflectionServicer] = {}

    def _servicer(self, header: str | None) -> ReflectionServicer:
        version = self._catalog.resolve(header)
        servicer = self._servicers.get(version)
        if servicer is None:
            pool = serving_pool([self._catalog.by_id[version].descriptor])
            servicer = ReflectionServicer(self._services, pool=pool)
            self._servicers[version] = servicer
        return servicer

    async def ServerReflectionInfo(  # the gRPC method's own name
        self, request_iterator: AsyncIterator[reflection_pb2.ServerReflectionRequest], context: Any
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        header = next(
            (v for k, v in context.invocation_metadata() or () if k == "x-api-version"), None
        )
        try:
            servicer = self._servicer(header)
        except ExpectedError as exc:  # unparsable (INVALID_ARGUMENT) or unknown (NOT_FOUND)
            await context.abort_with_status(rpc_status_of(exc))
            return
        async for response in servicer.ServerReflectionInfo(request_iterator, context):
            yield response
