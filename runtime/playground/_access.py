"""Who may use the playground, checked on every request before any route runs.

Two modes, chosen by the settings (:attr:`runtime.config.Settings.playground_open`):

- **open** (the default, on a loopback address): no token. The port is reachable from this
  machine only, and a web page elsewhere must not be able to drive it through the browser, so a
  request must name a loopback host in ``Host`` (a DNS-rebinding page names its own), and a
  request that changes anything must be JSON (a cross-site form cannot send it) from no other
  origin than the playground's own.
- **token** (``playground.enabled = true`` on another address): every API call carries a bearer
  token (or an ``x-api-key``) that the gateway's own authentication accepts and whose principal
  holds ``playground.role``; the same origin and JSON rules apply.

Every answer carries a strict Content-Security-Policy: the page loads nothing but its own files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.config import is_loopback
from runtime.errors import ModrpcError, PermissionDenied, Unauthenticated
from runtime.identity import Principal

__all__ = ["SECURITY_HEADERS", "Guard"]

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
)

Authenticate = Callable[[Mapping[str, str]], Principal]
"""The gateway's authentication: headers in, the principal out, or Unauthenticated raised."""

PRINCIPAL_KEY = "modrpc.principal"
"""Where the guard leaves the authenticated principal in the ASGI scope for the routes."""

_SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
OPEN_PRINCIPAL = Principal(subject="playground", method="anonymous")


class Guard:
    """ASGI middleware enforcing the mode (see the module docstring) around the playground app."""

    def __init__(self, app: ASGIApp, *, open_mode: bool, role: str, authenticate: Authenticate) -> None:
        self._app = app
        self._open = open_mode
        self._role = role
        self._authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, code, text = refusal
            await _json(secured, status, {"error": {"code": code, "message": text}})
            return
        await self._app(scope, receive, secured)

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str, str] | None:
        host = headers.get("host", "")
        if self._open and not is_loopback(_hostname(host)):
            return 403, "PERMISSION_DENIED", (
                f"the playground answers requests for a loopback host only, not {host!r}"
            )
        method = scope["method"]
        if method not in _SAFE_METHODS:
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                return 415, "INVALID_ARGUMENT", "send the request body as application/json"
            origin = headers.get("origin")
            if origin is not None and origin != f"{scope.get('scheme', 'http')}://{host}":
                return 403, "PERMISSION_DENIED", f"requests from the origin {origin!r} are refused"
        path: str = scope.get("path", "")
        api = path.startswith(f"{scope.get('root_path', '')}/api/")
        if not api or path.endswith("/api/session"):
            return None
        if self._open:
            scope[PRINCIPAL_KEY] = OPEN_PRINCIPAL
            return None
        try:
            principal = self._authenticate({k: v for k, v in headers.items() if k in ("authorization", "x-api-key")})
            if not principal.has_role(self._role):
                raise PermissionDenied(f"the playground needs the role {self._role!r}")
        except ModrpcError as exc:
            status = 401 if isinstance(exc, Unauthenticated) else 403
            return status, "UNAUTHENTICATED" if status == 401 else "PERMISSION_DENIED", exc.message
        scope[PRINCIPAL_KEY] = principal
        return None


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _json(send: Send, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
