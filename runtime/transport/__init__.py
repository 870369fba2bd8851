"""The call contract: one call between runtime processes, unary or streaming, whatever carries it.

:class:`Transport` is the contract (bytes, metadata and a deadline in; bytes and trailers out;
:class:`CallError` with the status otherwise; cancellation by cancelling the task; and for
streams, request messages in and a :class:`StreamCall` of response messages out). gRPC
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
    StreamCall,
    Transport,
    TransportError,
    Unreached,
)
from runtime.transport._grpc import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Endpoint,
    GrpcTransport,
    StreamEndpoint,
    call_error,
    stream_handler,
    unary_handler,
    until_half_closed,
)
from runtime.transport._local import InProcessModules
from runtime.transport._stream import (
    FailedStream,
    MessageQueue,
    ProducedStream,
    request_failed,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "CallError",
    "Disconnected",
    "Endpoint",
    "FailedStream",
    "GrpcTransport",
    "InProcessModules",
    "MessageQueue",
    "Metadata",
    "MetadataIn",
    "ProducedStream",
    "Reply",
    "StreamCall",
    "StreamEndpoint",
    "Transport",
    "TransportError",
    "Unreached",
    "call_error",
    "request_failed",
    "stream_handler",
    "unary_handler",
    "until_half_closed",
]
