"""The caller's contract (SPEC §4): a caller pinned to a version is served that version exactly.

Three decisions, shared by the gateway and the workers so both answer the same:

- :func:`check_request`: a request decoded at the caller's version is validated against that
  version's schema, constraints included, before any transform; its violations name fields as
  that version names them (a 2025-01-15 caller hears about ``name``, never ``given_name``).
- :func:`method_error`: a method the caller's version has but the serving version removed (or
  one the caller's version never had) is UNIMPLEMENTED naming the versions, never INTERNAL.

A request at a version that is itself served passes none of this: its bytes go through as they
are, and the worker that serves the version validates it. So does one at an older version whose
request means exactly what the served version's does (:func:`same_request_contract`) when
nothing transforms it: the worker's check is then the caller's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.errors import Unimplemented, ValidationFailed
from runtime.gtype import GType, validate
from runtime.status import describe_violation
from runtime.versions._catalog import VersionCatalog

__all__ = ["check_request", "method_error", "same_request_contract"]

_LISTED = 5
"""Violations spelt out in the status message; all of them travel in the BadRequest details."""


def check_request(catalog: VersionCatalog, version: str, method: str, request: Mapping[str, Any]) -> None:
    """Raise :class:`ValidationFailed` unless ``request`` is valid at ``version`` of ``method``.

    >>> check_request(users, "2025-01-15", "CreateUser", {"name": "", "email": "x"})  # doctest: +SKIP
    Traceback (most recent call last):
    ValidationFailed: invalid users.CreateUser request (version 2025-01-15): name: ...; email: ...
    """
    schema = catalog.by_id[version].schema
    problems = validate(dict(request), schema.method(method).request, schema)
    if problems:
        listed = "; ".join(describe_violation(p) for p in problems[:_LISTED])
        raise ValidationFailed(
            f"invalid {catalog.module}.{method} request (version {version}): {listed}", problems
        )


def same_request_contract(catalog: VersionCatalog, version: str, target: str, method: str) -> bool:
    """Whether ``method``'s request means the same at ``version`` and ``target``: the same type,
    reaching the same named types, constraints and all. Then a check at ``version`` is the check
    the worker serving ``target`` makes anyway, and the caller's bytes may go through untouched."""
    return _request_types(catalog, version, method) == _request_types(catalog, target, method)


def _request_types(catalog: VersionCatalog, version: str, method: str) -> tuple[GType, ...]:
    """``method``'s request type at ``version`` and every named type it reaches, in the order met."""
    schema = catalog.by_id[version].schema
    found: list[GType] = []
    named: set[str] = set()
    pending = [schema.method(method).request]
    while pending:
        node = pending.pop()
        found.append(node)
        if node.kind == "ref" and node.name not in named:
            named.add(node.name)
            pending.append(schema.type(node.name))
        pending.extend(f.type for f in reversed(node.fields))
        pending.extend(reversed(node.variants))
        pending.extend(n for n in (node.keys, node.items) if n is not None)
    return tuple(found)


def method_error(catalog: VersionCatalog, version: str, target: str, method: str) -> Unimplemented | None:
    """Why ``method`` cannot be served to a caller at ``version`` by ``target``, or None.

    The answer names the version that dropped the method (or added it), so the caller knows
    which pin to keep or which newer method to move to.
    """
    module = catalog.module
    name = f"{module}.{method}"
    having = [v.id for v in catalog.versions if any(m.name == method for m in v.schema.methods)]
    ids = [v.id for v in catalog.versions]
    if version not in having:
        position = ids.index(version)
        before = [v for v in having if ids.index(v) < position]
        if before:
            removed_in = ids[ids.index(before[-1]) + 1]
            why = f"it was removed in version {removed_in} (the last version with it is {before[-1]})"
        elif having:
            why = f"it was added in version {having[0]}"
        else:
            why = "no version has it"
        return Unimplemented(f"{name} is not part of version {version} of {module}: {why}")
    if target in having:
        return None
    position = ids.index(version)
    removed_in = next((v for v in ids[position + 1 :] if v not in having), target)
    return Unimplemented(
        f"{name} was removed in version {removed_in}: a caller at {version} reaches it only "
        f"where a worker serves {version} itself, not through {target}"
    )
