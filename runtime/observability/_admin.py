"""The admin HTTP port: one ASGI app (Starlette, served by uvicorn) for ``/metrics``, ``/healthz``
and whatever is mounted on it (the playground, on a gateway).

It runs on a thread of its own with its own event loop: a scrape must be answered even when the
serving loop is busy, and nothing served here (a slow page, a replay) can hold up a call.
uvicorn is started with bounds, so a client cannot hold the port open or exhaust it:

=================================  ===============================================================
``limit_concurrency``              connections and tasks at once; beyond it uvicorn answers 503
``timeout_keep_alive``             seconds an idle keep-alive connection stays open
``h11_max_incomplete_event_size``  bytes of request line and headers buffered before a 400
(and a complete head as large)     431, answered before any route runs (h11 bounds a head only
                                   while it is incomplete, so one that arrives whole in a read
                                   would pass)
``head_timeout``                   seconds a connection has to send a whole request head
``backlog``                        connections the kernel queues before accepting
=================================  ===============================================================

uvicorn itself times a connection out only between requests, so one that connects and then
sends nothing, or a byte now and then (slow loris), would be kept for ever; ``head_timeout``
closes it.

    >>> with start_admin_server("127.0.0.1", 0) as admin:
    ...     admin.port > 0
    True
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from runtime.observability._metrics import Metrics

__all__ = ["AdminLimits", "AdminServer", "start_admin_server"]

log = logging.getLogger("modrpc.admin")

START_SECONDS = 10.0
"""How long :func:`start_admin_server` waits for uvicorn to be listening."""
STOP_SECONDS = 5.0
"""How long ``close`` lets connections in flight finish before they are dropped."""


@dataclass(frozen=True)
class AdminLimits:
    """uvicorn's bounds for the admin port: ``limits.admin_*`` (README, "Limits")."""

    limit_concurrency: int = 64
    """Connections (and tasks) served at once; further ones are answered 503 at once."""
    timeout_keep_alive: int = 5
    """Seconds an idle keep-alive connection is kept before it is closed."""
    max_incomplete_event_size: int = 16 * 1024
    """Bytes of request line plus headers h11 buffers; a larger head is refused with 400."""
    backlog: int = 128
    """Connections the kernel queues before they are accepted."""
    head_timeout: float = 10.0
    """Seconds a connection has, from its start or its previous response, to send a request head."""


class _BoundedH11(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request head (see ``head_timeout``)."""

    head_timeout = AdminLimits.head_timeout
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out, self.cycle)

    def _head_timed_out(self, cycle_before: object) -> None:
        # A new request head replaces `cycle`; still the old one means no head came in time.
        if self.cycle is cycle_before and not self.transport.is_closing():
            self.transport.close()


class _HeadLimit:
    """Answer 431 to a request whose head is over ``max_bytes``, before any route runs."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.max_bytes:
                response = PlainTextResponse(
                    f"request head of {size} bytes is over this port's {self.max_bytes}\n", status_code=431
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Server(uvicorn.Server):
    """uvicorn's server, woken at once by :meth:`AdminServer.close` rather than at its next tick.

    uvicorn looks at ``should_exit`` every 0.1 s; a process that stops (a worker draining on
    SIGTERM) would otherwise wait for that tick on top of uvicorn's own shutdown.
    """

    wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self.wake = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):  # uvicorn's own tick, for its date header
                    await self.wake.wait()
            should_exit = await self.on_tick(counter)


class AdminServer:
    """A running admin server. ``port`` is the bound port (useful when started on port 0).

    More ASGI apps can be mounted under a path with :meth:`mount`, before or after the start.
    """

    def __init__(
        self,
        app: Starlette,
        server: _Server,
        thread: threading.Thread,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._app = app
        self._loop = loop
        self._server = server
        self._thread = thread
        self._socket = sock
        self._closed = False
        address = sock.getsockname()
        self.host: str = str(address[0])
        self.port: int = int(address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def mount(self, path: str, app: ASGIApp) -> None:
        """Serve ``app`` under ``path`` (e.g. ``/playground``), before the not-found answer."""
        self._app.router.routes.append(Mount(path, app=app))

    def run_soon(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run ``coro`` on the admin server's own event loop (where mounted apps run).

        What a mounted app keeps open (channels, store connections, background tasks) belongs
        to that loop, so it is also opened and closed there.
        """
        if self._closed:
            coro.close()
            raise RuntimeError("the admin server is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def close(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._server.should_exit = True
        wake = self._server.wake
        if wake is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own meanwhile
                self._loop.call_soon_threadsafe(wake.set)
        self._thread.join(STOP_SECONDS + 5)
        if self._thread.is_alive():  # a connection that will not close: stop waiting for it
            self._server.force_exit = True
            self._thread.join(5)
        self._socket.close()

    def __enter__(self) -> AdminServer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def admin_app(registry: CollectorRegistry, health: Callable[[], bool] | None = None) -> Starlette:
    """The ASGI app of the admin port: ``/metrics`` from ``registry``, ``/healthz``."""

    async def metrics(request: Request) -> Response:
        # Rendering walks every series under the registry's locks: off the loop, like a scrape
        # handled by a thread of its own was before.
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        healthy = _healthy(health)
        return PlainTextResponse("ok\n" if healthy else "unhealthy\n", status_code=200 if healthy else 503)

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("not found: try /metrics or /healthz\n", status_code=404)

    return Starlette(
        routes=[Route("/metrics", metrics), Route("/healthz", healthz)],
        exception_handlers={404: not_found},
    )


def start_admin_server(
    host: str,
    port: int,
    *,
    metrics: Metrics | None = None,
    health: Callable[[], bool] | None = None,
    limits: AdminLimits | None = None,
) -> AdminServer:
    """Serve ``/metrics`` from ``metrics`` (the global prometheus registry if ``None``) and
    ``/healthz`` (200 when ``health()`` is true or not given, else 503) on ``host:port``.

    Returns once the port is listening; an address in use is an ``OSError`` here.
    """
    limits = limits or AdminLimits()
    app = admin_app(metrics.registry if metrics is not None else REGISTRY, health)
    sock = _bind(host, port, limits.backlog)
    config = uvicorn.Config(
        _HeadLimit(app, limits.max_incomplete_event_size),
        # h11 (not httptools): the head-size bound below is h11's, and the head timeout hooks it.
        http=type("AdminH11", (_BoundedH11,), {"head_timeout": limits.head_timeout}),
        lifespan="off",
        log_config=None,  # the process's logging is configured by modrpc, not by uvicorn
        log_level="warning",  # its start and stop lines at INFO would repeat what modrpc logs
        access_log=False,  # scrapes every few seconds would drown the real logs
        server_header=False,
        proxy_headers=False,
        limit_concurrency=limits.limit_concurrency,
        timeout_keep_alive=limits.timeout_keep_alive,
        timeout_graceful_shutdown=int(STOP_SECONDS),
        h11_max_incomplete_event_size=limits.max_incomplete_event_size,
        backlog=limits.backlog,
    )
    server = _Server(config)
    failed: list[BaseException] = []
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve(sockets=[sock])

    def serve() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to start_admin_server or logged below
            failed.append(exc)
            log.error("the admin server on %s stopped: %s", sock.getsockname(), exc)

    thread = threading.Thread(target=serve, name=f"modrpc-admin-{sock.getsockname()[1]}", daemon=True)
    thread.start()
    started = threading.Event()
    # uvicorn sets `started` once its socket serves; poll it (it offers no callback for it).
    for _ in range(int(START_SECONDS / 0.01)):
        if server.started or failed or not thread.is_alive():
            break
        started.wait(0.01)
    if not server.started:
        server.should_exit = True
        thread.join(1)
        sock.close()
        raise OSError(f"the admin server on {host}:{port} did not start: {failed[0] if failed else 'timed out'}")
    return AdminServer(app, server, thread, sock, loops[0])


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.set_inheritable(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _healthy(health: Callable[[], bool] | None) -> bool:
    if health is None:
        return True
    try:
        return bool(health())
    except Exception:
        return False
