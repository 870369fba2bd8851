"""Serving a module in process: the embedded gateway calls a module's endpoints without a socket.

:class:`LocalEndpoints` is a module's :data:`~runtime.client.LocalCall`: it finds the endpoint of
a method path and runs it with an :class:`InProcessContext` in place of grpc.aio's servicer
context. The endpoint cannot tell the difference: it reads the same metadata and time remaining,
sets its trailing metadata, and ends a failed call with the same status, which arrives at the
caller as a :class:`~runtime.client.LocalAbort` instead of on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NoReturn

import grpc

from runtime.client import LocalAbort
from runtime.deadline import Deadline
from runtime.errors import Unimplemented
from runtime.status import rpc_status_of
from runtime.worker._endpoint import MethodEndpoint

__all__ = ["InProcessContext", "LocalEndpoints"]

Pairs = tuple[tuple[str, str | bytes], ...]


class InProcessContext:
    """What :class:`MethodEndpoint` uses of a servicer context, for one call made in process."""

    __slots__ = ("_deadline", "_metadata", "trailing_metadata")

    def __init__(self, metadata: Sequence[tuple[str, str | bytes]], deadline: Deadline | None) -> None:
        self._metadata: Pairs = tuple(metadata)
        self._deadline = deadline
        self.trailing_metadata: Pairs = ()

    def invocation_metadata(self) -> Pairs:
        return self._metadata

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self.trailing_metadata = tuple(metadata)

    def time_remaining(self) -> float | None:
        """Seconds left before the caller's deadline, as grpc.aio reports it (None: no deadline)."""
        return None if self._deadline is None else max(0.0, self._deadline.remaining())

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        """End the call with ``status``: the caller's module client receives it as a LocalAbort."""
        raise LocalAbort(status)


class LocalEndpoints:
    """A module's endpoints by method path, callable as a :data:`~runtime.client.LocalCall`."""

    __slots__ = ("_by_path",)

    def __init__(self, endpoints: Mapping[str, MethodEndpoint]) -> None:
        self._by_path = {endpoint.path: endpoint for endpoint in endpoints.values()}

    async def __call__(
        self, method_path: str, payload: bytes, metadata: Sequence[tuple[str, str | bytes]], deadline: Deadline | None
    ) -> tuple[bytes, Pairs]:
        endpoint = self._by_path.get(method_path)
        if endpoint is None:  # what grpc answers for a method no handler serves
            raise LocalAbort(rpc_status_of(Unimplemented(f"method {method_path} is not served here")))
        context = InProcessContext(metadata, deadline)
        response = await endpoint(payload, context)
        return response, context.trailing_metadata
