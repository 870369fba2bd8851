"""Handlers of the echo module."""

from bench.modules.echo.models import Echo, Echoed
from runtime import GlobalContext, LocalContext, handler


@handler
async def echo(req: Echo, lctx: LocalContext, gctx: GlobalContext) -> Echoed:
    """Answer with the request's fields, touching nothing else: the runtime is what is measured."""
    return Echoed(text=req.text, count=req.count)
