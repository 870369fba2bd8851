"""The module client: pooled, retrying, deadline-carrying, traced calls to modules.

The gateway and ``gctx.modules`` both reach workers through a :class:`ModuleClient`:

* :class:`ChannelPool` keeps grpc.aio channels per instance and picks one round-robin,
  skipping instances marked unhealthy while a healthy one exists;
* :class:`RetryPolicy` and :class:`RetryBudget` retry idempotent calls on ``UNAVAILABLE`` only,
  with jittered exponential backoff, never past the caller's deadline;
* :func:`client_interceptors` and :func:`server_interceptors` trace every call with the request
  id, handler id and version;
* :func:`error_from_status` is the one translation from a gRPC status to a runtime error;
* :class:`LocalTransport` reaches modules served in the same process (the embedded mode)
  without a socket, with the same bytes, metadata, deadline, retries and tracing.
"""

from runtime.client._client import ModuleClient, ResponseMetadata
from runtime.client._local import Disconnected, LocalAbort, LocalCall, LocalTransport, Unreached
from runtime.client._pool import DEFAULT_MAX_MESSAGE_BYTES, ChannelPool, RoundRobin, channel_options
from runtime.client._retry import (
    RetryBudget,
    RetryPolicy,
    is_retryable,
    stop_before_deadline,
    stop_when_budget_spent,
)
from runtime.client._tracing import (
    HANDLER_ATTRIBUTE,
    REQUEST_ID_ATTRIBUTE,
    VERSION_ATTRIBUTE,
    ClientTracer,
    ServerTracer,
    client_interceptors,
    default_handler_id,
    server_interceptors,
)
from runtime.client._translate import (
    ERROR_OF,
    error_from_local_abort,
    error_from_rpc_error,
    error_from_status,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ERROR_OF",
    "HANDLER_ATTRIBUTE",
    "REQUEST_ID_ATTRIBUTE",
    "VERSION_ATTRIBUTE",
    "ChannelPool",
    "ClientTracer",
    "Disconnected",
    "LocalAbort",
    "LocalCall",
    "LocalTransport",
    "ModuleClient",
    "ResponseMetadata",
    "RetryBudget",
    "RetryPolicy",
    "RoundRobin",
    "ServerTracer",
    "Unreached",
    "channel_options",
    "client_interceptors",
    "default_handler_id",
    "error_from_local_abort",
    "error_from_rpc_error",
    "error_from_status",
    "is_retryable",
    "server_interceptors",
    "stop_before_deadline",
    "stop_when_budget_spent",
]
