"""Who is calling, and which request: the principal, the peer process, and request ids.

Two identities meet at every worker. The **principal** is the caller the gateway authenticated
(a JWT, an API key or a client certificate); it travels in the ``x-modrpc-principal`` header and
lands in ``lctx.meta``. The **peer** is the runtime process that made the hop (the gateway, or
the worker of module M), proven by its TLS certificate (see :mod:`runtime.tls`), never by a
header: a worker believes the principal header only from a peer that is the gateway or a module.

Every identity's certificate names it in a DNS subject-alternative name under ``.modrpc``:

==================  =========================  ============================================
peer                certificate DNS name       files in the TLS folder
==================  =========================  ============================================
``gateway``         ``gateway.modrpc``         ``gateway.crt``, ``gateway.key``
``hub``             ``hub.modrpc``             ``hub.crt``, ``hub.key``
``module:users``    ``users.module.modrpc``    ``module-users.crt``, ``module-users.key``
``client:ada``      ``ada.client.modrpc``      ``client-ada.crt``, ``client-ada.key``
==================  =========================  ============================================

``client`` identities are people and programs outside the runtime (a developer's grpcurl): they
authenticate as a principal of their own, never as the runtime.

    >>> Peer.parse("module:users").dns_name, Peer.from_dns_names(["localhost", "gateway.modrpc"])
    ('users.module.modrpc', Peer(kind='gateway', name=''))
 A request id is kept from the caller when well formed and made otherwise; both
rules live here so the gateway and the worker agree on what "well formed" means.

    >>> is_valid_request_id(new_request_id()), is_valid_request_id("has space")
    (True, False)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, unquote

from runtime.errors import PermissionDenied

__all__ = [
    "ANONYMOUS",
    "PEER_DOMAIN",
    "PRINCIPAL_HEADER",
    "AuthMethod",
    "Peer",
    "PeerKind",
    "Principal",
    "check_roles",
    "current_peer",
    "is_valid_request_id",
    "missing_roles",
    "new_request_id",
    "principal_from_header",
    "principal_header",
    "request_id_of",
]

AuthMethod = Literal["jwt", "api_key", "mtls", "anonymous", "internal"]
"""How the principal proved itself: a JWT, an API key, a client certificate (``mtls``), nothing
(a public method), or ``internal``: a module acting on its own, with no caller behind it."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``roles`` gate methods; ``claims`` keep the verified JWT claims."""

    subject: str
    roles: tuple[str, ...] = ()
    method: AuthMethod = "anonymous"
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    via: str = ""
    """The module that made this call on the principal's behalf ('' for a call from the
    gateway): set by the worker from the calling module's certificate."""

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"subject": self.subject, "roles": list(self.roles), "method": self.method}
        if self.via:
            data["via"] = self.via
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Principal:
        return cls(
            subject=data["subject"],
            roles=tuple(data.get("roles", ())),
            method=data.get("method", "anonymous"),
            via=data.get("via", ""),
        )


ANONYMOUS = Principal(subject="anonymous")
"""The principal of a call to a public method made without credentials."""


def missing_roles(principal: Principal, required: Sequence[str]) -> list[str]:
    """The required roles the principal lacks, in the order the method lists them."""
    held = set(principal.roles)
    missing: list[str] = []
    for role in required:
        if role not in held and role not in missing:
            missing.append(role)
    return missing


def check_roles(principal: Principal, required: Sequence[str]) -> None:
    """Raise :class:`~runtime.errors.PermissionDenied` naming every required role not held.

    "All of them", not "any of them": a method that lists ``["orders.read", "admin"]`` needs
    both. A manifest that wants alternatives lists a role that each alternative grants, which
    keeps the rule readable from the manifest alone. The gateway checks a call's roles, and a
    worker checks them again for callers the gateway did not vouch for (see
    :mod:`runtime.worker`).

        >>> check_roles(Principal("ana", roles=("orders.read",)), ["orders.read"])
        >>> check_roles(Principal("ana"), ["orders.read"])
        Traceback (most recent call last):
        ...
        runtime.errors.PermissionDenied: missing role 'orders.read'
    """
    missing = missing_roles(principal, required)
    if not missing:
        return
    names = ", ".join(repr(role) for role in missing)
    noun = "role" if len(missing) == 1 else "roles"
    raise PermissionDenied(f"missing {noun} {names}")


PRINCIPAL_HEADER = "x-modrpc-principal"
"""How the gateway (and a module calling another) tells a worker whom the call is for:
``subject;role1,role2;method``, the subject and each role percent-encoded, so that no ``;`` or
``,`` inside a token's claims can add a role or change the method the worker sees.

A worker believes it only when the peer's certificate names the gateway or a module; from
anyone else it is ignored.
"""

_METHODS: tuple[AuthMethod, ...] = ("jwt", "api_key", "mtls", "anonymous", "internal")


def principal_header(principal: Principal) -> str:
    roles = ",".join(quote(role, safe=":@/") for role in principal.roles)
    return f"{quote(principal.subject, safe=':@/')};{roles};{principal.method}"


def principal_from_header(value: str | None) -> Principal:
    """The principal a gateway forwarded; anonymous when there is none.

    Parsed once per distinct header: a worker sees the same few callers over and over.
    """
    if not value:
        return ANONYMOUS
    principal = _PARSED.get(value)
    if principal is None:
        parts = value.split(";")
        if len(parts) != 3:  # not what a gateway writes: nobody in particular
            return ANONYMOUS
        subject, roles, method = parts
        principal = Principal(
            subject=unquote(subject) or "anonymous",
            roles=tuple(unquote(r) for r in roles.split(",") if r),
            method=next((m for m in _METHODS if m == method), "anonymous"),
        )
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[value] = principal
    return principal


_PARSED: dict[str, Principal] = {}
_PARSED_MAX = 4096
"""Bound on the headers remembered; past it the memory starts over (principals are immutable)."""


PEER_DOMAIN = "modrpc"
"""The DNS suffix under which peer identities are named."""

PeerKind = Literal["gateway", "hub", "module", "client"]

_MODULE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_CLIENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_SINGLE: tuple[PeerKind, ...] = ("gateway", "hub")


@dataclass(frozen=True, slots=True)
class Peer:
    """One identity: ``gateway``, ``hub``, ``module:<name>`` or ``client:<name>``."""

    kind: PeerKind
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind in _SINGLE:
            if self.name:
                raise ValueError(f"identity {self.kind!r} takes no name")
        elif self.kind == "module":
            if not _MODULE.fullmatch(self.name):
                raise ValueError(f"module identity {self.name!r} is not a module name (lower_snake_case)")
        elif self.kind == "client":
            if not _CLIENT.fullmatch(self.name):
                raise ValueError(
                    f"client identity {self.name!r}: 1 to 63 letters, digits, '-' or '_', starting with a letter or digit"
                )
        else:
            raise ValueError(f"unknown identity kind {self.kind!r}; expected gateway, hub, module or client")

    @classmethod
    def gateway(cls) -> Peer:
        return cls("gateway")

    @classmethod
    def hub(cls) -> Peer:
        return cls("hub")

    @classmethod
    def module(cls, name: str) -> Peer:
        return cls("module", name)

    @classmethod
    def client(cls, name: str) -> Peer:
        return cls("client", name)

    @classmethod
    def parse(cls, text: str) -> Peer:
        """``gateway``, ``hub``, ``module:users`` or ``client:ada``; ValueError otherwise."""
        kind, _, name = text.strip().partition(":")
        if kind not in ("gateway", "hub", "module", "client"):
            raise ValueError(f"identity {text!r}: expected gateway, hub, module:<name> or client:<name>")
        return cls(kind, name)  # type: ignore[arg-type]  # checked just above

    @property
    def runtime(self) -> bool:
        """A runtime process (gateway, hub, module), as opposed to an outside client."""
        return self.kind != "client"

    @property
    def dns_name(self) -> str:
        """The DNS name its certificate carries, and that a client expects of it as a server."""
        if self.kind in _SINGLE:
            return f"{self.kind}.{PEER_DOMAIN}"
        return f"{self.name}.{self.kind}.{PEER_DOMAIN}"

    @property
    def file_stem(self) -> str:
        """Its files in a TLS folder: ``<stem>.crt`` and ``<stem>.key``."""
        return self.kind if self.kind in _SINGLE else f"{self.kind}-{self.name}"

    @classmethod
    def from_dns_name(cls, name: str) -> Peer | None:
        """The identity a DNS name stands for; None for any other name (``localhost``...)."""
        labels = name.lower().split(".") if name.endswith(f".{PEER_DOMAIN}") else []
        if len(labels) == 2 and labels[0] in _SINGLE:
            return cls(labels[0])
        if len(labels) == 3 and labels[1] in ("module", "client"):
            original = name.split(".")[0]  # a client name keeps its case
            try:
                return cls(labels[1], original)  # type: ignore[arg-type]
            except ValueError:
                return None
        return None

    @classmethod
    def from_dns_names(cls, names: Iterable[str]) -> Peer | None:
        """The one identity among a certificate's DNS names; None when there is none, or two."""
        found = {peer for peer in map(cls.from_dns_name, names) if peer is not None}
        return found.pop() if len(found) == 1 else None

    def __str__(self) -> str:
        return self.kind if self.kind in _SINGLE else f"{self.kind}:{self.name}"


current_peer: ContextVar[Peer | None] = ContextVar("modrpc_peer", default=None)
"""The peer the call being served came from, as its transport authenticated it (set by the
server side of gRPC, the lane and in-process calls, per call); None: nobody proved anything."""


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    """A fresh, unique request id: 32 lower-case hex digits, 128 random bits.

    The same shape as ``uuid.uuid4().hex`` (which also draws on ``os.urandom``), without
    building a UUID object on every call.
    """
    return os.urandom(16).hex()


def is_valid_request_id(value: object) -> bool:
    """True iff ``value`` is a string of 1 to 128 characters from ``[A-Za-z0-9._:-]``.

    The alphabet is narrow on purpose: a caller-supplied id ends up in logs, metrics labels and
    response metadata, so it must not carry spaces, quotes or control characters.
    """
    return isinstance(value, str) and _REQUEST_ID.fullmatch(value) is not None


def request_id_of(value: str | None) -> str:
    """The caller's request id when well formed, otherwise a fresh one.

    A malformed id is replaced rather than refused: the id exists to correlate logs, and a
    caller should not fail because its proxy wrote something odd there.
    """
    if value is not None and _REQUEST_ID.fullmatch(value) is not None:
        return value
    return new_request_id()
