"""gRPC status -> runtime error: the one place the module client translates failures.

Both transports end up here: a failed grpc.aio call (``AioRpcError``) and a status an
in-process endpoint aborted with (:class:`~runtime.client.LocalAbort`).

The mapping is :data:`runtime.errors.STATUS_OF` read backwards, so a worker raising
``NotFound`` reaches the caller of the module client as ``NotFound`` again. Codes the runtime
never sends (UNKNOWN, ABORTED, OUT_OF_RANGE, DATA_LOSS) become :class:`InternalError`, with the
code named in the message: they mean a peer that is not a modrpc worker, or a bug.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from runtime.client._local import LocalAbort
from runtime.errors import STATUS_OF, InternalError, ModrpcError, ResourceExhausted, Unavailable
from runtime.status import REQUEST_ID_KEY

__all__ = ["ERROR_OF", "error_from_local_abort", "error_from_rpc_error", "error_from_status"]

ERROR_OF: dict[grpc.StatusCode, type[ModrpcError]] = {code: cls for cls, code in STATUS_OF.items()}
"""gRPC status -> runtime error class; the inverse of :data:`runtime.errors.STATUS_OF`."""

_STATUS_DETAILS_KEY = "grpc-status-details-bin"

log = logging.getLogger("modrpc.client")


def error_from_status(
    code: grpc.StatusCode, details: str | None, *, retry_after: float | None = None
) -> ModrpcError:
    """The runtime error for a failed call's status; the peer's details become the message."""
    cls = ERROR_OF.get(code)
    message = details or code.name
    if cls is None:
        return InternalError(f"{code.name}: {message}")
    if cls is ResourceExhausted:
        return ResourceExhausted(message, retry_after=retry_after)
    return cls(message)


def _retry_after(trailing: Sequence[tuple[str, str | bytes]]) -> float | None:
    """``google.rpc.RetryInfo.retry_delay`` from the rich status in trailing metadata, if sent."""
    for key, value in trailing:
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except DecodeError:  # malformed details from a peer must not hide the real error
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def error_from_rpc_error(
    exc: grpc.aio.AioRpcError, *, target: tuple[str, str] | None = None
) -> ModrpcError:
    """Translate a failed grpc.aio call. Callers chain it: ``raise error_from_rpc_error(e) from e``.

    The original ``AioRpcError`` stays reachable as ``__cause__``, with its trailing metadata
    (and so any ``google.rpc`` details) intact for a gateway that forwards them.

    ``target`` (pool key, method path) names what was called. An UNAVAILABLE that grpc's
    transport made up, no server having answered, names internal addresses ("failed to connect
    to all addresses; ipv4:10.0.3.7:50061: Connection refused"): with a target, that text goes
    to the log and the error names the module instead.
    """
    code = exc.code()
    if target is not None and code == grpc.StatusCode.UNAVAILABLE and _from_transport(exc):
        module, method_path = target
        log.warning("%s to %s: no instance could be reached: %s", method_path, module, exc.details())
        return Unavailable(f"no instance of {module.replace('@', ' ')} could be reached for {method_path}")
    retry_after = None
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        trailing: Sequence[tuple[str, str | bytes]] = tuple(exc.trailing_metadata() or ())  # type: ignore[arg-type]
        retry_after = _retry_after(trailing)
    return error_from_status(code, exc.details(), retry_after=retry_after)


_TRANSPORT_TEXT = re.compile(r"failed to connect|\b(?:ipv4|ipv6|unix|dns):")
"""What grpc core's own UNAVAILABLE messages contain, and a server's statuses do not."""


def _from_transport(exc: grpc.aio.AioRpcError) -> bool:
    """Whether grpc core made the status up (a modrpc worker returns ``x-request-id`` with every
    status it sends, and its messages name no addresses)."""
    if not _TRANSPORT_TEXT.search(exc.details() or ""):
        return False
    trailing: Sequence[tuple[str, Any]] = tuple(exc.trailing_metadata() or ())  # type: ignore[arg-type]
    return all(key != REQUEST_ID_KEY for key, _ in trailing)


def error_from_local_abort(exc: LocalAbort) -> ModrpcError:
    """Translate a status an in-process endpoint aborted with, exactly as a failed gRPC call.

    Callers chain it: ``raise error_from_local_abort(e) from e``; the status (and its details)
    stays reachable on ``__cause__.status``.
    """
    retry_after = None
    if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry_after = _retry_after(exc.trailing_metadata)
    return error_from_status(exc.code, exc.details, retry_after=retry_after)
