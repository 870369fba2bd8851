"""Hooks of the users module, declared in ``module.toml`` and so recorded in its manifest."""

from typing import Any

from runtime import LocalContext


def note_caller(lctx: LocalContext, req: Any) -> None:
    """Before every users call: keep who is asking in the request's state (snapshots show it)."""
    principal = lctx.meta.principal
    lctx.set("caller", principal.subject if principal is not None else "anonymous")
