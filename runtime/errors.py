"""The runtime's error tree and its one mapping to gRPC status codes.

Every failure the runtime reports to a caller is a :class:`ModrpcError`. Each subclass maps to
exactly one gRPC status, and :data:`STATUS_OF` is the only place that mapping lives.

    ModrpcError                      (base; never raised directly)
    ├── ExpectedError                (the caller or the environment did something wrong)
    │   ├── InvalidArgument          INVALID_ARGUMENT   bad field, unparsable version, bad bytes
    │   │   └── ValidationFailed     INVALID_ARGUMENT   carries field violations (path/expected/actual)
    │   ├── NotFound                 NOT_FOUND          unknown id, unknown version
    │   ├── AlreadyExists            ALREADY_EXISTS
    │   ├── Unauthenticated          UNAUTHENTICATED    missing or bad credentials
    │   ├── PermissionDenied         PERMISSION_DENIED  missing role or undeclared capability
    │   ├── ResourceExhausted        RESOURCE_EXHAUSTED rate limit, full queue, oversized message
    │   ├── FailedPrecondition       FAILED_PRECONDITION
    │   ├── DeadlineExceeded         DEADLINE_EXCEEDED
    │   ├── Cancelled                CANCELLED
    │   ├── Unavailable              UNAVAILABLE        backend or worker cannot be reached
    │   └── Unimplemented            UNIMPLEMENTED      unknown service or method
    └── InternalError                INTERNAL           a bug: bad response, failing transformer
        └── SchemaError              INTERNAL           an annotation, manifest or codegen problem
            ├── UnsupportedType      the analyzer cannot map an annotation (defined in gtype)
            ├── HandlerShapeError    a function is not a handler
            ├── ManifestError        module.toml is malformed
            └── CapabilityError      registration asked for or used an unknown capability

``runtime.gtype.UnsupportedType`` (the analyzer cannot map an annotation) is raised by gtype,
which imports nothing from the runtime; it is a ``TypeError``, found before serving, and
``status_of`` maps it to INTERNAL like every other exception outside this tree.

Expected errors are part of normal operation and are reported to the caller with their message.
An :class:`InternalError` is a bug: the caller gets a generic message and the details go to the
logs, so nothing internal (stack traces, secrets) leaks over the wire.
"""

from __future__ import annotations

import grpc

from runtime.gtype import FieldViolation, UnsupportedType

__all__ = [
    "STATUS_OF",
    "AlreadyExists",
    "Cancelled",
    "CapabilityError",
    "DeadlineExceeded",
    "ExpectedError",
    "FailedPrecondition",
    "FieldViolation",
    "HandlerShapeError",
    "InternalError",
    "InvalidArgument",
    "ManifestError",
    "ModrpcError",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SchemaError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UnsupportedType",
    "ValidationFailed",
    "status_of",
]


class ModrpcError(Exception):
    """Base of every runtime error. Not raised directly."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.relayed: grpc.Status | None = None
        """The status a peer ended a call with, when this error was read from one: a gateway
        passes it on as it came, ``google.rpc`` details included (see ``runtime.status``)."""


class ExpectedError(ModrpcError):
    """A failure that is part of normal operation; its message is safe to send to the caller."""


class InvalidArgument(ExpectedError):
    """The request is malformed: bad bytes, a bad field, an unparsable header."""


class ValidationFailed(InvalidArgument):
    """A value failed schema validation. ``violations`` lists every failure, not just the first."""

    def __init__(self, message: str, violations: list[FieldViolation]) -> None:
        super().__init__(message)
        self.violations = violations


class NotFound(ExpectedError):
    """The thing asked for does not exist: an id, a version, a module."""


class AlreadyExists(ExpectedError):
    """The thing to create exists already."""


class Unauthenticated(ExpectedError):
    """Credentials are missing, malformed, expired or forged."""


class PermissionDenied(ExpectedError):
    """The caller lacks a role, or a module used a capability it did not declare."""


class ResourceExhausted(ExpectedError):
    """A limit was hit: rate limit, queue capacity, message size.

    ``retry_after`` (seconds), when set, is sent back as ``google.rpc.RetryInfo``.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FailedPrecondition(ExpectedError):
    """The system is not in a state where the call can run."""


class DeadlineExceeded(ExpectedError):
    """The call's deadline passed before it finished."""


class Cancelled(ExpectedError):
    """The caller cancelled the call."""


class Unavailable(ExpectedError):
    """A worker or backend cannot be reached right now; retrying later may succeed."""


class Unimplemented(ExpectedError):
    """The service, method or version is not served here."""


class InternalError(ModrpcError):
    """A bug or broken invariant. Callers get a generic message; the details go to the logs."""


class SchemaError(InternalError):
    """A problem with annotations, manifests or generated code, found before serving."""


class HandlerShapeError(SchemaError):
    """A function registered as a handler does not have the handler shape."""


class ManifestError(SchemaError):
    """A module manifest is malformed; the message names the file and the key."""


class CapabilityError(SchemaError):
    """Registration asked for an unknown capability, or code used an undeclared one."""


STATUS_OF: dict[type[ModrpcError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Cancelled: grpc.StatusCode.CANCELLED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    InternalError: grpc.StatusCode.INTERNAL,
}
"""The one table from runtime error to gRPC status. Subclasses inherit their parent's code."""


def status_of(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status for any exception; anything that is not a runtime error is INTERNAL."""
    for cls in type(exc).__mro__:
        code = STATUS_OF.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL
