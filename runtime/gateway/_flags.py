"""Which ``x-flags`` a caller may send on to the workers.

Flags ask a worker for more than an answer, and some cost it: ``snapshot`` stores the whole
request in the store. So a flag that is a privilege travels on only for a caller holding one of
the roles configured for it (``auth.snapshot_roles``; nobody by default); the gateway drops it
for everyone else, silently, as it drops any other header it does not forward. Flags that cost
nothing pass as sent.

Run only for calls that carry ``x-flags``: nothing is added to a call without it.
"""

from __future__ import annotations

from collections.abc import Mapping

from runtime.identity import Principal
from runtime.lcc import SNAPSHOT_FLAG, parse_flags

__all__ = ["forwarded_flags", "privileged_flags"]


def forwarded_flags(
    value: str, principal: Principal, privileged: Mapping[str, frozenset[str]]
) -> str | None:
    """The ``x-flags`` value to forward for ``principal``, or None when nothing is left.

    ``privileged`` maps each privileged flag to the roles that may send it.

        >>> from runtime.identity import Principal
        >>> rules = {"snapshot": frozenset({"ops"})}
        >>> forwarded_flags("snapshot, debug", Principal("eve", (), "jwt"), rules)
        'debug'
        >>> forwarded_flags("snapshot", Principal("ada", ("ops",), "jwt"), rules)
        'snapshot'
    """
    flags = parse_flags(value)
    kept = [
        flag for flag in sorted(flags)
        if flag not in privileged or not privileged[flag].isdisjoint(principal.roles)
    ]  # fmt: skip
    return ",".join(kept) or None


def privileged_flags(snapshot_roles: tuple[str, ...]) -> dict[str, frozenset[str]]:
    """The privileged flags and who may send them, from the configured roles."""
    return {SNAPSHOT_FLAG: frozenset(snapshot_roles)}
