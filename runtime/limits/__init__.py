"""Limits: what bounds a server's connections, streams, time and memory.

Every gRPC server of the runtime is built with :func:`grpc_server_limits` (grpc core's own
server options, enforced in C); :func:`raise_open_file_limit` lifts the open-file limit the
connection budget is carved from. See ``_server`` for the table of options and their settings.
"""

from runtime.limits._server import grpc_server_limits, raise_open_file_limit

__all__ = ["grpc_server_limits", "raise_open_file_limit"]
