"""Runtime errors ↔ gRPC statuses with ``google.rpc`` details, both ways, in one place.

Outbound, :func:`rpc_status_of` turns an exception into the status to end a call with;
inbound, :func:`error_of` turns a peer's status back into the runtime error of that code (the
inverse of :data:`runtime.errors.STATUS_OF`), keeping the status itself as ``relayed`` so that a
gateway passes a worker's answer on unchanged instead of rebuilding a poorer copy.

The code comes from :func:`runtime.errors.status_of` (the one table). Details follow the
``google.rpc`` conventions so any gRPC client can read them:

- :class:`~runtime.errors.ValidationFailed` → ``BadRequest`` with one field violation per
  problem: the path as ``field``, and "expected X, got Y" as ``description``;
- :class:`~runtime.errors.ResourceExhausted` with ``retry_after`` → ``RetryInfo``.

An :class:`~runtime.errors.InternalError` (or any unexpected exception) never sends its text:
the caller gets a generic message with the request id, and the details go to the logs.

The message and the details travel in trailing metadata, which clients refuse past a few KiB
(grpc's hard limit is 16 KiB per value): a 20 000-character field echoed back whole would turn
the caller's INVALID_ARGUMENT into RESOURCE_EXHAUSTED "Stream removed". So values are quoted
in brief, the message is cut at :data:`MAX_MESSAGE_BYTES` and the violations sent stop at
:data:`MAX_DETAILS_BYTES`, the message saying how many were left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from runtime.errors import (
    STATUS_OF,
    ExpectedError,
    FieldViolation,
    InternalError,
    ModrpcError,
    ResourceExhausted,
    ValidationFailed,
    status_of,
)

__all__ = [
    "ERROR_OF",
    "MAX_DETAILS_BYTES",
    "MAX_MESSAGE_BYTES",
    "REQUEST_ID_KEY",
    "RpcStatus",
    "describe_violation",
    "error_of",
    "rpc_status_of",
    "safe_message",
    "with_request_id",
]

REQUEST_ID_KEY = "x-request-id"
"""The metadata key of the request id; servers return it in the trailers, with the status."""

MAX_MESSAGE_BYTES = 1024
"""Longest status message sent, in UTF-8 bytes (percent-encoding can triple it on the wire)."""
MAX_DETAILS_BYTES = 3072
"""Largest serialized ``BadRequest`` sent (base64 on the wire, so about 4 KiB of metadata)."""
_MAX_VALUE_CHARS = 60
_MAX_TEXT_CHARS = 200


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _brief(value: object) -> str:
    """``repr(value)``, shortened to its start and its length when it is long."""
    text = repr(value)
    if len(text) <= _MAX_VALUE_CHARS:
        return text
    if isinstance(value, str):
        size = f"{len(value)} characters"
    elif isinstance(value, bytes):
        size = f"{len(value)} bytes"
    else:
        size = f"{len(text)} characters as text"
    return f"{text[:_MAX_VALUE_CHARS]}\u2026 ({size})"


def describe_violation(violation: FieldViolation) -> str:
    """``path: expected X, got Y`` with Y in brief: for status messages the caller reads."""
    path = _clip(violation.path, _MAX_TEXT_CHARS) or "<root>"
    return f"{path}: {_description(violation)}"


def _description(violation: FieldViolation) -> str:
    expected = _clip(str(violation.expected), _MAX_TEXT_CHARS)
    return f"expected {expected}, got {_brief(violation.actual)}"


def _bounded_message(message: str) -> str:
    data = message.encode("utf-8")
    if len(data) <= MAX_MESSAGE_BYTES:
        return message
    return data[: MAX_MESSAGE_BYTES - 20].decode("utf-8", "ignore") + "\u2026 (message cut)"


def safe_message(exc: BaseException, request_id: str | None = None) -> str:
    """What the caller may read: an expected error's message, otherwise a generic one."""
    if isinstance(exc, ExpectedError):
        return exc.message
    suffix = f" (request id {request_id})" if request_id else ""
    return f"internal error{suffix}"


def rpc_status_of(exc: BaseException, request_id: str | None = None, *, relay: bool = False) -> grpc.Status:
    """The full status (code, message, details) to abort a call with.

    With ``relay`` (a gateway forwarding a worker's answer), an error read from a peer's status
    (:func:`error_of`) is answered with that status as it came, ``google.rpc`` details included,
    under this call's request id. Without it, the error is this server's own answer: a handler
    that lets another module's NOT_FOUND through answers NOT_FOUND with that message, not with
    the other module's field violations.
    """
    relayed = exc.relayed if relay and isinstance(exc, ModrpcError) else None
    if relayed is not None:
        return with_request_id(relayed, request_id)
    code = status_of(exc)
    message = safe_message(exc, request_id)
    details: list[Message] = []
    if isinstance(exc, ValidationFailed):
        bad = error_details_pb2.BadRequest()
        for sent, v in enumerate(exc.violations):
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=_clip(v.path, _MAX_TEXT_CHARS),
                description=_description(v),
            )
            if bad.ByteSize() + violation.ByteSize() + 8 > MAX_DETAILS_BYTES:
                message += f" ({len(exc.violations) - sent} more violations not listed)"
                break
            bad.field_violations.append(violation)
        details.append(bad)
    elif isinstance(exc, ResourceExhausted) and exc.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, int(exc.retry_after * 1000)))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=code.value[0], message=_bounded_message(message))
    for detail in details:
        status.details.add().Pack(detail)
    return with_request_id(rpc_status.to_status(status), request_id)


@dataclass(frozen=True, slots=True)
class RpcStatus(grpc.Status):
    """A ``grpc.Status`` value (grpc itself only ships the abstract class)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...] = ()


def with_request_id(status: grpc.Status, request_id: str | None) -> grpc.Status:
    """``status`` with ``x-request-id`` in its trailing metadata (replacing any earlier one).

    Servers return the request id in the trailers on success and on failure alike, so a caller
    always finds it in the same place.
    """
    if not request_id:
        return status
    kept = tuple((k, v) for k, v in status.trailing_metadata or () if k != REQUEST_ID_KEY)
    return RpcStatus(status.code, status.details, (*kept, (REQUEST_ID_KEY, request_id)))


ERROR_OF: dict[grpc.StatusCode, type[ModrpcError]] = {code: cls for cls, code in STATUS_OF.items()}
"""gRPC status -> runtime error class; the inverse of :data:`runtime.errors.STATUS_OF`."""

_DETAILS_KEY = "grpc-status-details-bin"


def error_of(status: grpc.Status, *, relay: bool = True) -> ModrpcError:
    """The runtime error for a status a call ended with; the peer's details become the message.

    Codes the runtime never sends (UNKNOWN, ABORTED, OUT_OF_RANGE, DATA_LOSS) become
    :class:`InternalError` naming the code: they mean a peer that is not a modrpc server, or a
    bug. With ``relay`` the status is kept on the error (``relayed``) and answered as it came.
    """
    code: grpc.StatusCode = status.code
    message = status.details or code.name
    cls = ERROR_OF.get(code)
    error: ModrpcError
    if cls is None:
        error = InternalError(f"{code.name}: {message}")
    elif cls is ResourceExhausted:
        error = ResourceExhausted(message, retry_after=_retry_after(status.trailing_metadata or ()))
    else:
        error = cls(message)
    if relay and cls is not None:
        error.relayed = status
    return error


def _retry_after(trailing: Sequence[tuple[str, str | bytes]]) -> float | None:
    """``google.rpc.RetryInfo.retry_delay`` from the rich status in trailing metadata, if sent."""
    for key, value in trailing:
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        rich = status_pb2.Status()
        try:
            rich.ParseFromString(value)
        except DecodeError:  # malformed details from a peer must not hide the real error
            return None
        for detail in rich.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None
