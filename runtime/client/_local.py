"""The in-process transport: modules served inside the calling process, reached without a socket.

In the embedded mode (``modrpc up --embedded``) every module runs inside the gateway's process.
The module client then hands each call for such a module to the module's in-process endpoint
instead of a channel: the same request bytes, metadata and deadline go in and the same response
bytes come out, but there is no HTTP/2 framing, no socket and no second gRPC server.

The worker registers one :data:`LocalCall` per module; the gateway, which never imports the
worker, only sees this registry::

    transport = LocalTransport()
    transport.register("users", service.local_call)      # the worker side
    client = ModuleClient(pool, local=transport)          # the gateway side
    body, metadata = await client.call_raw("users", "/users.v1.UsersService/GetUser", payload)

An endpoint that ends a call with a status (as a gRPC server aborts) raises :class:`LocalAbort`
carrying that status; the module client translates it exactly as it translates a failed gRPC
call, so callers cannot tell the two transports apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence

import grpc

from runtime.deadline import Deadline

__all__ = ["LocalAbort", "LocalCall", "LocalTransport", "Unreached"]

PairsIn = Sequence[tuple[str, str | bytes]]
PairsOut = tuple[tuple[str, str | bytes], ...]

LocalCall = Callable[[str, bytes, PairsIn, Deadline | None], Awaitable[tuple[bytes, PairsOut]]]
"""``(method_path, payload, metadata, deadline) -> (response bytes, response metadata)``."""


class LocalAbort(Exception):
    """The status an in-process endpoint ended its call with: the local twin of ``AioRpcError``.

    Expected: it carries a status the endpoint chose (``NOT_FOUND``, ``INVALID_ARGUMENT`` with
    ``google.rpc.BadRequest`` details...). The module client turns it into the runtime error of
    that status, with this exception as ``__cause__`` so a gateway can relay the details.
    """

    def __init__(self, status: grpc.Status) -> None:
        super().__init__(f"{status.code.name}: {status.details}")
        self.status = status

    @property
    def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = self.status.code
        return code

    @property
    def details(self) -> str:
        details: str = self.status.details or ""
        return details

    @property
    def trailing_metadata(self) -> PairsOut:
        return tuple(self.status.trailing_metadata or ())


class Unreached(LocalAbort):
    """UNAVAILABLE before anything was sent: the endpoint never saw the call.

    A transport raises it when it could not even hand the call over (a lane whose port refuses
    connections, a client already closed). The call may then safely go another way, retried or
    not, idempotent or not: the module client sends it over gRPC instead.
    """


class Disconnected(LocalAbort):
    """UNAVAILABLE because the transport's connection was lost or closed while the call was out.

    The endpoint may or may not have run the call, so only an idempotent call may be retried;
    but the transport itself failed, not the endpoint: the module client looks it up again.
    """


class LocalTransport:
    """Module name → the in-process endpoint serving it. Registration happens at startup only.

    A module client is called with a pool key: a module name, or ``module@version``, which is
    how the gateway keeps apart the instances of each version served side by side. A key of the
    second form finds the module's endpoint only when that version is one the endpoint serves.

        >>> async def serve(path, payload, metadata, deadline):
        ...     return payload, ()
        >>> transport = LocalTransport()
        >>> transport.register("users", serve, versions=["2025-06-01"])
        >>> transport.lookup("users@2025-06-01") is serve, transport.lookup("users@2025-01-15")
        (True, None)
    """

    __slots__ = ("_calls", "_keys")

    def __init__(self) -> None:
        self._calls: dict[str, LocalCall] = {}
        self._keys: dict[str, LocalCall] = {}

    def register(self, module: str, call: LocalCall, *, versions: Collection[str] = ()) -> None:
        """Serve ``module`` (at ``versions``) in process from now on; replaces an earlier registration."""
        self.unregister(module)
        self._calls[module] = call
        self._keys[module] = call
        for version in versions:
            self._keys[f"{module}@{version}"] = call

    def unregister(self, module: str) -> None:
        """Stop serving ``module`` in process (calls go back to the network). Safe twice."""
        call = self._calls.pop(module, None)
        if call is None:
            return
        for key in [k for k, c in self._keys.items() if c is call and k.partition("@")[0] == module]:
            del self._keys[key]

    def lookup(self, key: str) -> LocalCall | None:
        """The in-process endpoint for a pool key, or None when it is served elsewhere."""
        return self._keys.get(key)

    def modules(self) -> tuple[str, ...]:
        return tuple(sorted(self._calls))
