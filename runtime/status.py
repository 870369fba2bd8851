"""Runtime errors → gRPC statuses with ``google.rpc`` details, in one place.

The code comes from :func:`runtime.errors.status_of` (the one table). Details follow the
``google.rpc`` conventions so any gRPC client can read them:

- :class:`~runtime.errors.ValidationFailed` → ``BadRequest`` with one field violation per
  problem: the path as ``field``, and "expected X, got Y" as ``description``;
- :class:`~runtime.errors.ResourceExhausted` with ``retry_after`` → ``RetryInfo``.

An :class:`~runtime.errors.InternalError` (or any unexpected exception) never sends its text:
the caller gets a generic message with the request id, and the details go to the logs.
"""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from runtime.errors import (
    ExpectedError,
    ResourceExhausted,
    ValidationFailed,
    status_of,
)

__all__ = ["rpc_status_of", "safe_message"]


def safe_message(exc: BaseException, request_id: str | None = None) -> str:
    """What the caller may read: an expected error's message, otherwise a generic one."""
    if isinstance(exc, ExpectedError):
        return exc.message
    suffix = f" (request id {request_id})" if request_id else ""
    return f"internal error{suffix}"


def rpc_status_of(exc: BaseException, request_id: str | None = None) -> grpc.Status:
    """The full status (code, message, details) to abort a call with."""
    code = status_of(exc)
    status = status_pb2.Status(code=code.value[0], message=safe_message(exc, request_id))
    if isinstance(exc, ValidationFailed):
        bad = error_details_pb2.BadRequest()
        for v in exc.violations:
            bad.field_violations.add(field=v.path, description=f"expected {v.expected}, got {v.actual!r}")
        status.details.add().Pack(bad)
    elif isinstance(exc, ResourceExhausted) and exc.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, int(exc.retry_after * 1000)))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return rpc_status.to_status(status)
