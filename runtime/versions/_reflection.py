"""Server reflection that follows the caller's ``x-api-version``, for the gateway and workers alike.

A caller pinned to an old version sends the old message shapes, and grpcurl builds requests from
what reflection describes: describing only the newest version would make it refuse the old
fields (``message type users.v1.CreateUserRequest has no known field named name``) before the
call is even sent. So reflection answers with the descriptors of the version the header resolves
to for the module asked about, and with no header each module's default version (``stable``,
else ``latest``).

A header reflection cannot honour is refused exactly as a call would be: an unparsable one is
INVALID_ARGUMENT, and a version a module does not have is NOT_FOUND with the same message a
call gets, rather than quietly describing some other version.

``google.rpc`` error details are described too, so grpcurl prints the field violations of an
INVALID_ARGUMENT instead of "google.rpc.BadRequest is not recognized".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from runtime.errors import ExpectedError, NotFound
from runtime.status import rpc_status_of
from runtime.versions._catalog import VersionCatalog
from runtime.wire import service_name, serving_pool

__all__ = ["VersionedReflection"]

_Servicer = tuple[ReflectionServicer, DescriptorPool]
"""A reflection servicer and the descriptor pool it answers from."""

_MAX_SERVICERS = 64
"""Servicers (descriptor pools) kept; a few modules with a few versions each stay far below."""


class VersionedReflection(reflection_pb2_grpc.ServerReflectionServicer):  # type: ignore[misc]
    """``grpc.reflection.v1alpha`` over the modules ``catalogs()`` returns, at the caller's version.

    ``catalogs`` is read per reflection stream (the gateway's modules change as workers come
    and go); ``services`` are listed besides the modules' own (health, reflection). Each request
    of a stream is answered from the module it names (a symbol's package, a file's folder), at
    the version the header resolves to for that module: so ``2025-01-15`` describes users as it
    was then, even if another module is younger than that date. Listing services lists the
    modules the header resolves for.
    """

    def __init__(self, catalogs: Callable[[], Mapping[str, VersionCatalog]], services: Sequence[str]) -> None:
        self._catalogs = catalogs
        self._services = tuple(services)
        # key: the chosen descriptors' ids; the value keeps the descriptors alive, so no id is
        # reused by another descriptor while its entry exists.
        self._servicers: dict[tuple[int, ...], tuple[list[Any], _Servicer]] = {}

    def _servicer(self, chosen: Sequence[tuple[str, VersionCatalog, str]]) -> _Servicer:
        descriptors = [catalog.by_id[version].descriptor for _, catalog, version in chosen]
        key = tuple(id(descriptor) for descriptor in descriptors)
        cached = self._servicers.get(key)
        if cached is not None:
            return cached[1]
        names = sorted([service_name(name) for name, _, _ in chosen] + list(self._services))
        pool = serving_pool(descriptors)
        servicer = (ReflectionServicer(names, pool=pool), pool)
        if len(self._servicers) >= _MAX_SERVICERS:
            self._servicers.clear()
        self._servicers[key] = (descriptors, servicer)
        return servicer

    async def ServerReflectionInfo(  # the gRPC method's own name
        self, request_iterator: AsyncIterator[reflection_pb2.ServerReflectionRequest], context: Any
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        header = next((v for k, v in context.invocation_metadata() or () if k == "x-api-version"), None)
        catalogs = self._catalogs()
        resolved: dict[str, tuple[str, VersionCatalog, str]] = {}
        refused: dict[str, ExpectedError] = {}
        for name in sorted(catalogs):
            try:
                resolved[name] = (name, catalogs[name], catalogs[name].resolve(header))
            except ExpectedError as exc:  # unparsable (INVALID_ARGUMENT) or unknown (NOT_FOUND)
                refused[name] = exc
        if not resolved and refused:
            first = next(iter(refused.values()))
            if len(refused) > 1 and isinstance(first, NotFound):  # name each module's reason
                first = NotFound("no module has that version: " + "; ".join(e.message for e in refused.values()))
            # The caller's first question is taken before the answer: a refusal that overtakes
            # its write fails that write in the client ("Failed execute_batch", INTERNAL), and the
            # caller would see that instead of this status.
            async for _ in request_iterator:
                break
            await context.abort_with_status(rpc_status_of(first))
            return
        everything = self._servicer(list(resolved.values()))
        async for request in request_iterator:
            module = _module_of(request)
            if module in refused:  # asked about a module the header names no version of
                await context.abort_with_status(rpc_status_of(refused[module]))
                return
            servicer, pool = self._servicer([resolved[module]]) if module in resolved else everything
            request = _method_as_service(request, pool)
            async for response in servicer.ServerReflectionInfo(_one(request), context):
                yield response


def _module_of(request: reflection_pb2.ServerReflectionRequest) -> str | None:
    """The module a reflection request is about: a symbol's package or a file's folder."""
    kind = request.WhichOneof("message_request")
    if kind == "file_by_filename":
        return str(request.file_by_filename).partition("/")[0]
    if kind == "file_containing_symbol":
        return str(request.file_containing_symbol).partition(".")[0]
    if kind == "file_containing_extension":
        return str(request.file_containing_extension.containing_type).partition(".")[0]
    if kind == "all_extension_numbers_of_type":
        return str(request.all_extension_numbers_of_type).partition(".")[0]
    return None


def _method_as_service(request: reflection_pb2.ServerReflectionRequest, pool: DescriptorPool) -> reflection_pb2.ServerReflectionRequest:
    """A symbol naming a method (``pkg.Service.Method``, as ``grpcurl describe`` sends it) asks
    for the file of its service: what gRPC's own reflection answers, and what the descriptor
    pool cannot look up by the method's name."""
    if request.WhichOneof("message_request") != "file_containing_symbol":
        return request
    symbol = str(request.file_containing_symbol)
    try:
        pool.FindFileContainingSymbol(symbol)
        return request
    except KeyError:
        service, _, method = symbol.rpartition(".")
        try:
            found = pool.FindServiceByName(service)
        except KeyError:
            return request
        if method not in found.methods_by_name:
            return request
    asked = reflection_pb2.ServerReflectionRequest()
    asked.CopyFrom(request)
    asked.file_containing_symbol = service
    return asked


async def _one(
    request: reflection_pb2.ServerReflectionRequest,
) -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
    yield request
