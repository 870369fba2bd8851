"""modrpc: a runtime for services built out of typed modules that talk gRPC.

This top level holds only what a module author writes in a handlers file::

    from runtime import GlobalContext, LocalContext, handler, subscriber

    @handler
    async def create_user(req: CreateUser, lctx: LocalContext, gctx: GlobalContext) -> User:
        ...

Everything else lives in its own package (``runtime.manifest``, ``runtime.gtype``, ...). Each
name is imported on first use, so ``import runtime.gtype`` loads nothing else of the runtime.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.context import GlobalContext, subscriber
    from runtime.lcc import LocalContext
    from runtime.manifest import handler

__all__ = ["GlobalContext", "LocalContext", "handler", "subscriber"]

_LAZY = {
    "handler": "runtime.manifest",
    "GlobalContext": "runtime.context",
    "subscriber": "runtime.context",
    "LocalContext": "runtime.lcc",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
