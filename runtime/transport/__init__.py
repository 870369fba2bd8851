"""The call contract: one unary call between runtime processes, whatever carries it.

:class:`Transport` is the contract (bytes, metadata and a deadline in; bytes and trailers out;
:class:`CallError` with the status otherwise; cancellation by cancelling the task). gRPC
(:class:`GrpcTransport`), the lane (:mod:`runtime.lane`) and in-process endpoints
(:class:`InProcessModules`) each implement it, and the module client and the gateway use it
without knowing which one carries a call.
"""

from runtime.transport._contract import (
    CallError,
    Disconnected,
    Metadata,
    MetadataIn,
    Reply,
    Transport,
    TransportError,
    Unreached,
)
from runtime.transport._grpc import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Endpoint,
    GrpcTransport,
    call_error,
    unary_handler,
)
from runtime.transport._local import InProcessModules

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "CallError",
    "Disconnected",
    "Endpoint",
    "GrpcTransport",
    "InProcessModules",
    "Metadata",
    "MetadataIn",
    "Reply",
    "Transport",
    "TransportError",
    "Unreached",
    "call_error",
    "unary_handler",
]
