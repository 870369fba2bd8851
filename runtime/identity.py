"""Who is calling, and which request: the principal the ingress authenticated, and request ids.

The principal travels to workers in the ``x-modrpc-principal`` header and lands in
``lctx.meta``. A request id is kept from the caller when well formed and made otherwise; both
rules live here so the gateway and the worker agree on what "well formed" means.

    >>> is_valid_request_id(new_request_id()), is_valid_request_id("has space")
    (True, False)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, unquote

__all__ = [
    "ANONYMOUS",
    "PRINCIPAL_HEADER",
    "AuthMethod",
    "Principal",
    "is_valid_request_id",
    "new_request_id",
    "principal_from_header",
    "principal_header",
    "request_id_of",
]

AuthMethod = Literal["jwt", "api_key", "anonymous", "internal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``roles`` gate methods; ``claims`` keep the verified JWT claims."""

    subject: str
    roles: tuple[str, ...] = ()
    method: AuthMethod = "anonymous"
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "roles": list(self.roles), "method": self.method}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Principal:
        return cls(subject=data["subject"], roles=tuple(data.get("roles", ())), method=data.get("method", "anonymous"))


ANONYMOUS = Principal(subject="anonymous")
"""The principal of a call to a public method made without credentials."""


PRINCIPAL_HEADER = "x-modrpc-principal"
"""How the gateway tells a worker whom it authenticated: ``subject;role1,role2;method``, the
subject and each role percent-encoded, so that no ``;`` or ``,`` inside a token's claims can add
a role or change the method the worker sees.

Workers listen on private addresses and trust this header from the gateway; a direct call
without it runs as the anonymous principal.
"""

_METHODS: tuple[AuthMethod, ...] = ("jwt", "api_key", "anonymous", "internal")


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
