"""Which ``x-flags`` a caller may send on to the workers.

Flags ask a worker for more than an answer, and some cost it: ``snapshot`` stores the whole
request in the store. So it travels on only for a caller holding one of the roles configured for
it (``auth.snapshot_roles``; nobody by default); the gateway drops it for everyone else,
silently, as it drops any other header it does not forward, and each worker checks again
(:func:`runtime.lcc.permitted_flags`, the one rule both apply). Flags that cost nothing pass as
sent.

Run only for calls that carry ``x-flags``: nothing is added to a call without it.
"""

from __future__ import annotations

from runtime.identity import Principal
from runtime.lcc import parse_flags, permitted_flags

__all__ = ["forwarded_flags"]


def forwarded_flags(value: str, principal: Principal, snapshot_roles: frozenset[str]) -> str | None:
    """The ``x-flags`` value to forward for ``principal``, or None when nothing is left.

        >>> from runtime.identity import Principal
        >>> forwarded_flags("snapshot, debug", Principal("eve", (), "jwt"), frozenset({"ops"}))
        'debug'
        >>> forwarded_flags("snapshot", Principal("ada", ("ops",), "jwt"), frozenset({"ops"}))
        'snapshot'
    """
    return ",".join(sorted(permitted_flags(parse_flags(value), principal.roles, snapshot_roles))) or None
