"""The supervisor's watchdog: a worker that stops answering is killed, so it is restarted.

A worker process can be alive and useless: frozen (SIGSTOP), its event loop blocked by a
handler, or stuck writing to a pipe nobody reads. Nothing then ends the process, so the
supervisor would never restart it. The watchdog asks the worker's ``grpc.health.v1`` service
every second; any answer (SERVING or not: a draining worker answers too) shows the worker makes
progress, and so does a refused connection (a worker that closed its port is on its way out,
not hung). Only calls that time out count: after ``hang_seconds`` of nothing else, the worker
is declared hung and killed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.identity import Peer
from runtime.tls import InternalTls

__all__ = ["watch_progress"]

log = logging.getLogger("modrpc.up")

PROBE_SECONDS = 1.0
"""How often the worker is asked."""


async def watch_progress(module: str, address: str, hang_seconds: float, tls: InternalTls | None = None) -> None:
    """Return once the worker at ``address`` has answered no health check for ``hang_seconds``.

    Runs until cancelled while the worker answers; the caller kills the process when it returns.
    ``tls``: the identity to ask with (workers only take mutual TLS from the deployment CA).
    """
    if tls is None:
        channel = grpc.aio.insecure_channel(address)
    else:
        channel = grpc.aio.secure_channel(
            address, tls.channel_credentials(), options=tls.channel_options(Peer.module(module))
        )
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        last_answer = time.monotonic()
        while True:
            try:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=PROBE_SECONDS)
                last_answer = time.monotonic()
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    last_answer = time.monotonic()  # it answered (or its port is closed): not hung
            silent = time.monotonic() - last_answer
            if silent >= hang_seconds:
                log.error(
                    "worker %s on %s answered no health check for %.1fs: it hangs; killing it",
                    module, address, silent,
                )  # fmt: skip
                return
            await asyncio.sleep(PROBE_SECONDS)
