"""The wire form of module schemas: protobuf descriptors, stable field numbers, and a codec.

Workers, the gateway, reflection and codegen all derive their protobuf view of a module version
from here, so the bytes served and the ``.proto`` committed come from one function.
"""

from runtime.wire._codec import WireVersion, serving_pool
from runtime.wire._descriptor import WireSchemaError, build_file
from runtime.wire._lock import FieldLock
from runtime.wire._naming import (
    SANDBOX_SERVICE,
    handler_id_of,
    method_path,
    package_name,
    pascal,
    request_message,
    response_message,
    service_name,
    snake,
    version_segment,
)

__all__ = [
    "SANDBOX_SERVICE",
    "FieldLock",
    "WireSchemaError",
    "WireVersion",
    "build_file",
    "handler_id_of",
    "method_path",
    "package_name",
    "pascal",
    "request_message",
    "response_message",
    "service_name",
    "serving_pool",
    "snake",
    "version_segment",
]
