"""Limits: what bounds a server's connections, streams, time and memory.

Every gRPC server of the runtime is built with :func:`grpc_server_limits` (grpc core's own
server options, enforced in C); :func:`raise_open_file_limit` lifts the open-file limit the
connection budget is carved from. See ``_server`` for the table of options and their settings.
:class:`ResetGuard` closes connections that reset streams in a loop (rapid reset), which grpc's
options do not bound (``_resets``), and :class:`AddressBans` refuses their address new
connections for a while, in the kernel (``_bans``).
"""

from runtime.limits._bans import AddressBans
from runtime.limits._resets import PREMATURE, AnsweredStreams, Offender, ResetGuard
from runtime.limits._server import admin_limits, grpc_server_limits, raise_open_file_limit
from runtime.limits._sockets import peer_address

__all__ = ["PREMATURE", "AddressBans", "AnsweredStreams", "Offender", "ResetGuard", "admin_limits", "grpc_server_limits", "peer_address", "raise_open_file_limit"]
