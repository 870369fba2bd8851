"""Runtime errors → gRPC statuses with ``google.rpc`` details, in one place.

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

from dataclasses import dataclass

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from runtime.errors import (
    ExpectedError,
    FieldViolation,
    ResourceExhausted,
    ValidationFailed,
    status_of,
)

__all__ = [
    "MAX_DETAILS_BYTES",
    "MAX_MESSAGE_BYTES",
    "REQUEST_ID_KEY",
    "RpcStatus",
    "describe_violation",
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


def rpc_status_of(exc: BaseException, request_id: str | None = None) -> grpc.Status:
    """The full status (code, message, details) to abort a call with."""
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
