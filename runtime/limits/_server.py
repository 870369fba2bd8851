"""Limits: what bounds a server's connections, streams, time and memory.

Every gRPC server of the runtime (the gateway, each worker) is built with
:func:`grpc_server_limits`, which turns :class:`~runtime.config.LimitsSettings` into grpc core's
own server options, so the bounds are enforced in C before a byte reaches Python:

========================================  ========================================================
grpc option                               from
========================================  ========================================================
``grpc.max_allowed_incoming_connections`` ``max_connections`` (never past the open-file budget)
``grpc.max_concurrent_streams``           ``max_concurrent_streams``; with grpc's default overload
                                          protection, streams still being torn down count, so a
                                          rapid-reset client is refused past it
``grpc.server.max_pending_requests``      ``max_connections * max_concurrent_streams``: grpc's
(and ``_hard_limit``)                     default (1000) would let one client's reset streams
                                          fill the server-wide queue and cancel other clients'
                                          calls
``grpc.server_handshake_timeout_ms``      ``handshake_timeout``
``grpc.max_connection_idle_ms``           ``idle_timeout``
``grpc.max_connection_age_ms`` / grace    ``max_connection_age`` / ``max_connection_age_grace``
``grpc.keepalive_time_ms`` / timeout      ``keepalive_time`` / ``keepalive_timeout``, with
``grpc.keepalive_permit_without_calls``   pings on idle connections too, and with no cap on
``grpc.http2.max_pings_without_data``     pings while the server has nothing else to send: a
``grpc.http2.ping_timeout_ms``            client that stops reading is cut off once a ping goes
                                          unanswered for ``keepalive_timeout`` (grpc's own ping
                                          timeout is a minute)
``grpc.http2.min_ping_interval_...``      ``min_client_ping_interval``, ``max_ping_strikes``:
``grpc.http2.max_ping_strikes``           a ping flood ends in GOAWAY ``too_many_pings``
``grpc.max_metadata_size`` (and           ``max_metadata_bytes``: grpc's default is a soft limit
``grpc.absolute_max_metadata_size``)      past which calls are refused at random, and 10,000
                                          small headers got through to Python (46 ms of CPU each)
``grpc.http2.lookahead_bytes``            ``stream_window_bytes``, with ``grpc.http2.bdp_probe``
                                          off: grpc would otherwise grow a stream's window to
                                          megabytes, and buffer that much of a client that sends
                                          while its answers go unread
``grpc.max_receive_message_length``       ``max_message_bytes``: checked against the length a
                                          message declares, before its body is buffered
``maximum_concurrent_rpcs`` (server)      ``max_concurrent_calls``: calls whose request is still
                                          arriving count, so with the message limit it bounds
                                          the memory requests can pin
========================================  ========================================================

The lane (ours, not grpc's) applies the same settings itself (``runtime.lane``).

The connection limit has to stay below the process's open-file limit, or connections past it
would take the descriptors the process needs for its own files and calls (``accept`` failing
with EMFILE locks every client out). :func:`raise_open_file_limit` lifts the soft limit to the
hard one (``modrpc up`` does it at start), and :func:`connection_budget` keeps
``max_connections`` under what is left after :attr:`~runtime.config.LimitsSettings.reserved_files`.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

from runtime.config import LimitsSettings
from runtime.observability import AdminLimits

__all__ = [
    "admin_limits",
    "grpc_server_limits",
    "raise_open_file_limit",
]

log = logging.getLogger("modrpc.limits")

_MIN_CONNECTIONS = 16


def open_file_limit() -> int:
    """The process's soft limit on open files (``RLIMIT_NOFILE``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_open_file_limit() -> int:
    """Lift the soft open-file limit to the hard one (child processes inherit it); the new soft
    limit. Nothing is raised past the hard limit, which only the administrator can change."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. a hard limit the kernel caps lower
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return open_file_limit()


def connection_budget(limits: LimitsSettings, *, servers: int = 1) -> int:
    """Connections each of ``servers`` servers of this process may accept: ``max_connections``,
    or less when the open-file limit, after ``reserved_files``, cannot hold that many for each."""
    room = max(_MIN_CONNECTIONS, (open_file_limit() - limits.reserved_files) // max(1, servers))
    if limits.max_connections > room:
        log.warning(
            "limits.max_connections is %d but the open-file limit (%d, %d reserved) leaves room "
            "for %d per server; accepting at most %d (raise the hard limit: ulimit -Hn)",
            limits.max_connections, open_file_limit(), limits.reserved_files, room, room,
        )  # fmt: skip
        return room
    return limits.max_connections


@dataclass(frozen=True, slots=True)
class GrpcServerLimits:
    """What ``grpc.aio.server`` is built with: ``grpc.aio.server(options=l.options,
    maximum_concurrent_rpcs=l.maximum_concurrent_rpcs)``."""

    options: tuple[tuple[str, int], ...]
    maximum_concurrent_rpcs: int
    max_connections: int


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def grpc_server_limits(
    limits: LimitsSettings, max_message_bytes: int, *, servers: int = 1
) -> GrpcServerLimits:
    """grpc's server options for ``limits``; ``servers``: how many servers of this process share
    the open-file budget (a worker has its gRPC port and its lane).

        >>> from runtime.config import LimitsSettings
        >>> built = grpc_server_limits(LimitsSettings(max_connections=100), 4 << 20)
        >>> dict(built.options)["grpc.max_allowed_incoming_connections"], built.maximum_concurrent_rpcs
        (100, 256)
    """
    connections = connection_budget(limits, servers=servers)
    pending = connections * limits.max_concurrent_streams
    options = (
        ("grpc.max_allowed_incoming_connections", connections),
        ("grpc.max_concurrent_streams", limits.max_concurrent_streams),
        ("grpc.server.max_pending_requests", pending),
        ("grpc.server.max_pending_requests_hard_limit", pending),
        ("grpc.server_handshake_timeout_ms", _ms(limits.handshake_timeout)),
        ("grpc.max_connection_idle_ms", _ms(limits.idle_timeout)),
        ("grpc.max_connection_age_ms", _ms(limits.max_connection_age)),
        ("grpc.max_connection_age_grace_ms", _ms(limits.max_connection_age_grace)),
        ("grpc.keepalive_time_ms", _ms(limits.keepalive_time)),
        ("grpc.keepalive_timeout_ms", _ms(limits.keepalive_timeout)),
        ("grpc.http2.ping_timeout_ms", _ms(limits.keepalive_timeout)),
        # Pings on connections with no call too: a peer that stopped reading is found even
        # when its answers were all written (into its socket buffer) before it stopped.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(limits.min_client_ping_interval)),
        ("grpc.http2.max_ping_strikes", limits.max_ping_strikes),
        ("grpc.max_metadata_size", limits.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", limits.max_metadata_bytes),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", limits.stream_window_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    )
    return GrpcServerLimits(options, limits.max_concurrent_calls, connections)


def admin_limits(limits: LimitsSettings) -> AdminLimits:
    """The admin port's bounds (uvicorn's) from ``limits.admin_*``."""
    return AdminLimits(
        limit_concurrency=limits.admin_max_connections,
        timeout_keep_alive=limits.admin_keep_alive,
        max_incomplete_event_size=limits.admin_max_head_bytes,
        head_timeout=limits.admin_head_timeout,
    )
