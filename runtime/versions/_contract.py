"""The caller's contract (SPEC §4): a caller pinned to a version is served that version exactly.

Three decisions, shared by the gateway and the workers so both answer the same:

- :func:`check_request`: a request decoded at the caller's version is validated against that
  version's schema, constraints included, before any transform; its violations name fields as
  that version names them (a 2025-01-15 caller hears about ``name``, never ``given_name``).
- :func:`method_error`: a method the caller's version has but the serving version removed (or
  one the caller's version never had) is UNIMPLEMENTED naming the versions, never INTERNAL.

A request at a version that is itself served passes none of this: its bytes go through as they
are, and the worker that serves the version validates it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.errors import Unimplemented, ValidationFailed
from runtime.gtype import validate
from runtime.status import describe_violation
from runtime.versions._catalog import VersionCatalog

__all__ = ["check_request", "method_error"]

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


def method_error(catalog: VersionCatalog, version: str, target: str, method: str) -> Unimplemented | None:
    """Why ``method`` cannot be served to a caller at ``version`` by ``target``, or None.

    The answer names the version that dropped the method, so the caller knows which pin to
    keep or which newer method to move to.
    """
    def has(v: str) -> bool:
        return any(m.name == method for m in catalog.by_id[v].schema.methods)

    if not has(version):
        return Unimplemented(f"{catalog.module}.{method} is not part of version {version} of {catalog.module}")
    if has(target):
        return None
    removed_in = target
    for info in catalog.versions:
        if info.created_at > catalog.by_id[version].created_at and not has(info.id):
            removed_in = info.id
            break
    return Unimplemented(
        f"{catalog.module}.{method} was removed in version {removed_in}; it is served at "
        f"{version} only while a worker serves that version, and none does now (serving {target})"
    )
