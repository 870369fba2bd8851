"""Modules served inside the calling process, reached without a socket.

In the embedded mode (``modrpc up --embedded``) every module runs inside the gateway's process,
and a worker's endpoints are themselves a :class:`~runtime.transport.Transport`: the module
client hands such a module's calls straight to them, with the same bytes, metadata and deadline
in and the same bytes out, but no HTTP/2 framing, no socket and no second gRPC server.

The worker registers its endpoints here; the gateway, which never imports the worker, only sees
this registry::

    modules = InProcessModules()
    modules.register("users", service.transport, versions=["2025-06-01"])   # the worker side
    pool = InstancePool(local=modules)                                       # the client side
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Collection

import grpc

from runtime.deadline import Deadline, Expiry
from runtime.status import RpcStatus
from runtime.transport._contract import MetadataIn, Reply, StreamCall, Transport, TransportError

__all__ = ["InProcessModules"]


class _InProcess:
    """A module's endpoints called directly, with the deadline enforced as a wire transport does:
    past it the call ends DEADLINE_EXCEEDED and the endpoint's work is cancelled, whatever the
    endpoint does with the deadline itself."""

    __slots__ = ("_served",)

    def __init__(self, served: Transport) -> None:
        self._served = served

    async def unary(self, method: str, payload: bytes, metadata: MetadataIn, deadline: Deadline | None) -> Reply:
        if deadline is None:
            return await self._served.unary(method, payload, metadata, deadline)
        expiry = Expiry(deadline)
        try:
            return await self._served.unary(method, payload, metadata, deadline)
        except asyncio.CancelledError:
            if expiry.alone():
                details = f"deadline exceeded before {method} answered in process"
                raise TransportError(RpcStatus(grpc.StatusCode.DEADLINE_EXCEEDED, details)) from None
            raise
        finally:
            expiry.cancel()


    def stream(
        self, method: str, requests: AsyncIterable[bytes], metadata: MetadataIn, deadline: Deadline | None
    ) -> StreamCall:
        """The endpoint's own stream: its lifecycle holds the deadline over the stream's whole
        life and ends it DEADLINE_EXCEEDED, cancelling the handler, as a wire transport would."""
        return self._served.stream(method, requests, metadata, deadline)


class InProcessModules:
    """Module name → the in-process transport serving it. Registration happens at startup only.

    A module client is called with a pool key: a module name, or ``module@version``, which is
    how the gateway keeps apart the instances of each version served side by side. A key of the
    second form finds the module's endpoints only when that version is one they serve.
    """

    __slots__ = ("_keys", "_modules")

    def __init__(self) -> None:
        self._modules: dict[str, Transport] = {}
        self._keys: dict[str, Transport] = {}

    def register(self, module: str, transport: Transport, *, versions: Collection[str] = ()) -> None:
        """Serve ``module`` (at ``versions``) in process from now on; replaces an earlier registration."""
        self.unregister(module)
        wrapped = _InProcess(transport)
        self._modules[module] = wrapped
        self._keys[module] = wrapped
        for version in versions:
            self._keys[f"{module}@{version}"] = wrapped

    def unregister(self, module: str) -> None:
        """Stop serving ``module`` in process (calls go back to the network). Safe twice."""
        transport = self._modules.pop(module, None)
        if transport is None:
            return
        for key in [k for k, t in self._keys.items() if t is transport and k.partition("@")[0] == module]:
            del self._keys[key]

    def lookup(self, key: str) -> Transport | None:
        """The in-process transport for a pool key, or None when it is served elsewhere."""
        return self._keys.get(key)

    def modules(self) -> tuple[str, ...]:
        return tuple(sorted(self._modules))
