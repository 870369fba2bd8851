"""The playground of one gateway: a Starlette app mounted at ``/playground`` on its admin port.

:meth:`Playground.attach` is all a command does: it checks the settings, starts keeping the
process's recent spans (a :class:`~runtime.observability.TraceRing` on the tracer provider),
mounts the app and starts sampling the metrics for the live view. Everything the app opens (a
store connection, a gRPC channel to the gateway and to workers) is opened lazily on the admin
server's own event loop and closed there by :meth:`Playground.close`, so the gateway's loop never
waits on a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from runtime.config import Settings, is_loopback
from runtime.errors import InternalError, InvalidArgument, ModrpcError, NotFound, status_of
from runtime.gateway import authenticator_from_settings, issue_dev_token, jwt_secret_in_force
from runtime.identity import Principal
from runtime.observability import AdminServer, LogTail, Metrics, TraceRing, configure_tracing
from runtime.playground._access import PRINCIPAL_KEY, Guard
from runtime.playground._catalog import module_detail, modules_summary, version_diff, version_schema
from runtime.playground._explorer import Explorer
from runtime.playground._live import SAMPLE_SECONDS, LiveView
from runtime.playground._snapshots import Snapshots
from runtime.playground._traces import recent, timeline
from runtime.tls import InternalTls

__all__ = ["GatewayView", "Playground"]

log = logging.getLogger("modrpc.playground")

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 1024 * 1024
"""The largest JSON body the API reads (an explorer request, mostly)."""
TOKEN_TTL_SECONDS = 8 * 3600
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "UNIMPLEMENTED": 501,
}


class GatewayView(Protocol):
    """What the playground reads of a running gateway."""

    settings: Settings
    address: str
    metrics: Metrics
    tls: InternalTls | None
    """The gateway's identity: replays go to workers over mutual TLS with it."""

    @property
    def table(self) -> Any: ...

    @property
    def admin(self) -> AdminServer | None: ...


class _Loop:
    """What the app keeps on the admin loop, opened on first use."""

    def __init__(self) -> None:
        self.store: Any = None
        self.explorer: Explorer | None = None
        self.snapshots: Snapshots | None = None
        self.audit: LogTail | None = None
        self.sampler: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()


class Playground:
    """The playground served for ``gateway`` (see the module docstring)."""

    def __init__(self, gateway: GatewayView, ring: TraceRing) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.ring = ring
        self.live = LiveView.of_registry(gateway.metrics.registry)
        self._open = self.settings.playground_open
        secret = jwt_secret_in_force(self.settings)
        # Only the published development secret, which the gateway accepts on loopback only.
        self._mint_with = secret.value if self._open and secret.development else None
        self._can_mint = self._mint_with is not None
        self._auth = authenticator_from_settings(self.settings)
        self._loop: _Loop | None = None
        self._sampling_started = False
        self.app = self._build()

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def attach(cls, gateway: GatewayView) -> Playground | None:
        """Serve the playground on ``gateway``'s admin port when the settings ask for it.

        Returns None (and changes nothing) when the playground is off or the gateway has no
        admin port.
        """
        settings = gateway.settings
        admin = gateway.admin
        if not settings.playground_on or admin is None:
            return None
        ring = TraceRing(settings.playground.traces)
        _record_spans(ring, settings.observability.service_name)
        playground = cls(gateway, ring)
        admin.mount("/playground", playground.app)
        admin.run_soon(playground._start_sampling())
        log.info("playground on %s/playground/", admin.url)
        return playground

    @property
    def url(self) -> str:
        admin = self.gateway.admin
        return f"{admin.url}/playground/" if admin is not None else ""

    async def close(self) -> None:
        """Close what the app opened, on the admin loop. Safe to call twice."""
        admin = self.gateway.admin
        if admin is None or (self._loop is None and not self._sampling_started):
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.wrap_future(admin.run_soon(self._close())), 10)

    async def _start_sampling(self) -> None:
        state = self._state()
        self._sampling_started = True

        async def sample_forever() -> None:
            while True:
                try:
                    self.live.sample()
                except Exception as exc:  # a collector that fails once must not end the view
                    log.warning("live view sample failed: %s", exc)
                await asyncio.sleep(SAMPLE_SECONDS)

        state.sampler = asyncio.create_task(sample_forever(), name="modrpc-playground-live")

    async def _close(self) -> None:
        state, self._loop = self._loop, None
        if state is None:
            return
        if state.sampler is not None:
            state.sampler.cancel()
        for closer in (state.explorer, state.snapshots, state.store):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.close()

    def _state(self) -> _Loop:
        if self._loop is None:
            self._loop = _Loop()
        return self._loop

    async def _store(self) -> Any:
        state = self._state()
        async with state.lock:
            if state.store is None:
                from runtime.store import open_store

                store = open_store(self.settings.store_url)
                await store.start()
                state.store = store
        return state.store

    async def _explorer(self) -> Explorer:
        state = self._state()
        if state.explorer is None:
            state.explorer = Explorer(self.gateway.address, max_message_bytes=self.settings.max_message_bytes)
        return state.explorer

    async def _snapshots(self) -> Snapshots:
        state = self._state()
        if state.snapshots is None:
            state.snapshots = Snapshots(
                await self._store(), role=self.settings.playground.role, tls=self.gateway.tls
            )
        return state.snapshots

    async def _audit(self) -> LogTail:
        state = self._state()
        if state.audit is None:
            observability = self.settings.observability
            capacity = self.settings.playground.traces
            if observability.audit_sink == "store":
                state.audit = LogTail(store=await self._store(), stream="audit", capacity=capacity)
            else:
                state.audit = LogTail(path=observability.audit_path, capacity=capacity)
        await state.audit.poll()
        return state.audit

    # -- the app --------------------------------------------------------------------------------
    def _build(self) -> Starlette:
        def api(fn: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                try:
                    return JSONResponse(await fn(request))
                except ModrpcError as exc:
                    code = status_of(exc).name
                    message = exc.message if not isinstance(exc, InternalError) else "internal error; see the gateway's log"
                    if isinstance(exc, InternalError):
                        log.error("playground %s failed: %s", request.url.path, exc, exc_info=exc)
                    return JSONResponse({"error": {"code": code, "message": message}}, status_code=_HTTP_STATUS.get(code, 500))
                except KeyError as exc:
                    text = str(exc.args[0]) if exc.args else "not found"
                    return JSONResponse({"error": {"code": "NOT_FOUND", "message": text}}, status_code=404)

            return endpoint

        routes = [
            Route("/", self._index),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Route("/api/session", api(self._session)),
            Route("/api/modules", api(self._modules)),
            Route("/api/modules/{name}", api(self._module)),
            Route("/api/modules/{name}/versions/{version:path}", api(self._schema)),
            Route("/api/modules/{name}/diff", api(self._diff)),
            Route("/api/token", api(self._token), methods=["POST"]),
            Route("/api/call", api(self._call), methods=["POST"]),
            Route("/api/traces", api(self._traces)),
            Route("/api/traces/{request_id}", api(self._trace)),
            Route("/api/snapshots", api(self._snapshot_list)),
            Route("/api/snapshots/{id}", api(self._snapshot)),
            Route("/api/snapshots/{id}/replay", api(self._replay), methods=["POST"]),
            Route("/api/snapshots/{id}/hooks/{hook}", api(self._play_hook), methods=["POST"]),
            Route("/api/live", api(self._live)),
        ]

        def authenticate(headers: Mapping[str, str]) -> Principal:
            return self._auth.authenticate(headers, public=False)

        guard = Middleware(Guard, open_mode=self._open, role=self.settings.playground.role, authenticate=authenticate)
        return Starlette(routes=routes, middleware=[guard])

    async def _index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    async def _session(self, request: Request) -> dict[str, Any]:
        return {
            "mode": "open" if self._open else "token",
            "can_mint": self._can_mint,
            "gateway": self.gateway.address,
            "role": self.settings.playground.role,
            "loopback": is_loopback(self.settings.host),
            "audit": str(self.settings.observability.audit_sink),
            # Who may ask for a snapshot with x-flags (the gateway drops the flag for others).
            "snapshot_roles": list(self.settings.auth.snapshot_roles),
        }

    def _modules_now(self) -> Mapping[str, Any]:
        return self.gateway.table.modules  # type: ignore[no-any-return]

    async def _modules(self, request: Request) -> Any:
        return {"modules": modules_summary(self._modules_now())}

    async def _module(self, request: Request) -> Any:
        return module_detail(self._modules_now(), request.path_params["name"])

    async def _schema(self, request: Request) -> Any:
        return version_schema(self._modules_now(), request.path_params["name"], request.path_params["version"])

    async def _diff(self, request: Request) -> Any:
        query = request.query_params
        return version_diff(self._modules_now(), request.path_params["name"], query.get("from", ""), query.get("to", ""))

    async def _token(self, request: Request) -> Any:
        if self._mint_with is None:
            raise InvalidArgument(
                "tokens are minted here only on loopback with the development secret; "
                "get one from your identity provider (or `modrpc token` in development)"
            )
        body = await _json_body(request)
        subject = _text(body, "subject", "playground")
        roles = body.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) and r and len(r) < 200 for r in roles):
            raise InvalidArgument("roles is a list of role names")
        auth = self.settings.auth
        token = issue_dev_token(
            self._mint_with, subject=subject, roles=roles, ttl_seconds=TOKEN_TTL_SECONDS,
            issuer=auth.issuer, audience=auth.audience,
        )  # fmt: skip
        return {"token": token, "subject": subject, "roles": roles, "expires_in": TOKEN_TTL_SECONDS}

    async def _call(self, request: Request) -> Any:
        body = await _json_body(request)
        module = _text(body, "module")
        entry = self._modules_now().get(module)
        if entry is None:
            raise NotFound(f"no module named {module!r} is routed by the gateway")
        flags = body.get("flags", [])
        if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
            raise InvalidArgument("flags is a list of flag names")
        token = body.get("token")
        if token is not None and not isinstance(token, str):
            raise InvalidArgument("token is a string")
        explorer = await self._explorer()
        return await explorer.call(
            entry.catalog,
            method=_text(body, "method"),
            version=_text(body, "version"),
            request=body.get("request", {}),
            token=token or None,
            flags=flags,
        )

    async def _traces(self, request: Request) -> Any:
        limit = _limit(request, 100)
        audit = await self._audit()
        return {"traces": recent(self.ring.roots(limit), audit.recent(limit), limit), "source": audit.source}

    async def _trace(self, request: Request) -> Any:
        request_id = request.path_params["request_id"]
        audit = await self._audit()
        return timeline(request_id, self.ring.trace_of(request_id), audit.records_of(request_id))

    async def _snapshot_list(self, request: Request) -> Any:
        snapshots = await self._snapshots()
        return {"snapshots": await snapshots.recent(request.query_params.get("handler") or None, _limit(request, 200))}

    async def _snapshot(self, request: Request) -> Any:
        snapshots = await self._snapshots()
        return await snapshots.load(request.path_params["id"])

    async def _replay(self, request: Request) -> Any:
        body = await _json_body(request)
        versions = body.get("versions")
        if not isinstance(versions, list) or not 1 <= len(versions) <= 2 or not all(isinstance(v, str) and v for v in versions):
            raise InvalidArgument("versions is a list of one or two versions to replay at")
        snapshots = await self._snapshots()
        return await snapshots.replay(
            request.path_params["id"], versions, live=bool(body.get("live")), subject=_subject(request)
        )

    async def _play_hook(self, request: Request) -> Any:
        await _json_body(request)
        snapshots = await self._snapshots()
        return await snapshots.play_hook(request.path_params["id"], request.path_params["hook"], subject=_subject(request))

    async def _live(self, request: Request) -> Any:
        window = request.query_params.get("window", "300")
        try:
            seconds = min(max(float(window), 10.0), 900.0)
        except ValueError:
            raise InvalidArgument(f"window is a number of seconds, not {window!r}") from None
        return {"at": time.time(), **self.live.figures(seconds)}


def _record_spans(ring: TraceRing, service: str) -> None:
    """Make this process record spans into ``ring`` (next to any OTLP export already set up)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(ring)
    else:
        configure_tracing(service, install_global=True, processors=(ring,))


async def _json_body(request: Request) -> dict[str, Any]:
    size = 0
    chunks = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise InvalidArgument(f"the request body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks) or b"{}")
    except ValueError as exc:
        raise InvalidArgument(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the body is a JSON object")
    return body


def _text(body: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{key!r} is a non-empty string")
    return value


def _limit(request: Request, default: int) -> int:
    try:
        return min(max(int(request.query_params.get("limit", default)), 1), 1000)
    except ValueError:
        raise InvalidArgument("limit is a whole number") from None


def _subject(request: Request) -> str:
    principal = request.scope.get(PRINCIPAL_KEY)
    return principal.subject if isinstance(principal, Principal) else "playground"
