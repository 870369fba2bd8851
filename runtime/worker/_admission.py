"""Who may call a worker's methods, and for whom: the worker's half of the trust model.

Every call reaches a worker over a transport that proved who sent it (mutual TLS on gRPC and
the lane, or the process itself for an in-process call), as a :class:`~runtime.identity.Peer`
in :data:`~runtime.identity.current_peer`. :class:`Admission` turns that peer and the call's
``x-modrpc-principal`` header into the principal the handler acts for, or refuses the call:

=====================  ==============================================================================
peer                   principal, and what is checked
=====================  ==============================================================================
none                   refused, UNAUTHENTICATED: nothing proved who is calling
``gateway``            the header: the gateway authenticated the caller and checked the method's
                       roles (it reads the same policy from the manifests this worker publishes)
``module:M``           the header: the original caller, ``via`` M. M must have declared this module
                       in ``capabilities.modules`` (else PERMISSION_DENIED); with ``inner_roles =
                       "caller"`` (the default) the original caller must hold the method's roles
``client:NAME``        NAME itself (``mtls``), with the roles ``tls.client_roles`` gives it; the
                       header is ignored; the method's roles are checked
``hub`` (or other)     refused, PERMISSION_DENIED: it does not call methods
=====================  ==============================================================================

A header anyone could set is believed only from the gateway or a module, whose certificates
come from the deployment CA. Parsing is remembered per distinct peer and header, so admission
costs a dict lookup and a role check per call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

from runtime.errors import PermissionDenied, Unauthenticated
from runtime.identity import Peer, Principal, check_roles, principal_from_header
from runtime.manifest import MethodPolicy

__all__ = ["Admission"]

_REMEMBERED = 4096
_REREAD_SECONDS = 2.0
"""How often, at most, an unknown calling module makes the project's declarations be read again."""


class Admission:
    """The callers a module admits: the modules that declared it, the gateway, client identities."""

    __slots__ = ("_client_roles", "_known", "_reread", "_reread_at", "callers", "module")

    def __init__(
        self,
        module: str,
        callers: frozenset[str],
        client_roles: Mapping[str, tuple[str, ...]] | None = None,
        reread: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        self.module = module
        self.callers = callers
        """Modules whose ``capabilities.modules`` name this one."""
        self._client_roles = dict(client_roles or {})
        self._known: dict[tuple[Peer, str | None], Principal] = {}
        self._reread = reread
        """Reads ``callers`` again (a module declared since this worker started, under ``--reload``)."""
        self._reread_at = 0.0

    def principal(self, peer: Peer | None, header: str | None, policy: MethodPolicy) -> Principal:
        """The principal a call from ``peer`` acts for; raises when the call is refused."""
        if peer is None:
            raise Unauthenticated(
                f"{self.module} serves only the gateway and modules, over mutual TLS with the "
                "deployment's certificates: call it through the gateway"
            )
        principal = self._known.get((peer, header))
        if principal is None:
            principal = self._principal(peer, header)
        if policy.roles and not policy.public and peer.kind != "gateway":
            if peer.kind == "client" or policy.inner_roles == "caller":
                try:
                    check_roles(principal, policy.roles)
                except PermissionDenied as exc:
                    if not principal.via:
                        raise
                    raise PermissionDenied(
                        f"{exc.message} ({principal.via} called {self.module} on behalf of {principal.subject!r}, "
                        "and the method checks the original caller's roles)"
                    ) from None
        return principal

    def _principal(self, peer: Peer, header: str | None) -> Principal:
        kind = peer.kind
        if kind == "gateway":
            principal = principal_from_header(header)
        elif kind == "module":
            if peer.name not in self.callers and self._reread is not None:
                now = time.monotonic()
                if now >= self._reread_at:
                    self._reread_at = now + _REREAD_SECONDS
                    self.callers = self._reread()
            if peer.name not in self.callers:
                raise PermissionDenied(
                    f"module {peer.name!r} did not declare capability modules=[{self.module!r}]"
                )
            principal = dataclasses.replace(principal_from_header(header), via=peer.name)
        elif kind == "client":
            principal = Principal(subject=peer.name, roles=self._client_roles.get(peer.name, ()), method="mtls")
        else:
            raise PermissionDenied(f"{peer} does not call module methods")
        if len(self._known) >= _REMEMBERED:
            self._known.clear()
        self._known[peer, header] = principal
        return principal
