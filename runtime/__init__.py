"""modrpc: a runtime for services built out of typed modules that talk gRPC.

This top level holds only what a module author writes in a handlers file::

    from runtime import handler

    @handler
    async def create_user(req: CreateUserRequest, lctx: LocalContext, gctx: GlobalContext) -> User:
        ...

Everything else lives in its own package (``runtime.manifest``, ``runtime.gtype``, ...).
"""

from runtime.manifest import handler

__all__ = ["handler"]
