"""Who is calling: the principal the ingress authenticated, carried in ``lctx.meta``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ANONYMOUS", "AuthMethod", "Principal"]

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
