"""Handlers of the echo module."""

from collections.abc import AsyncIterator

from bench.modules.echo.models import Echo, Echoed, EchoMany
from runtime import GlobalContext, LocalContext, handler


@handler
async def echo(req: Echo, lctx: LocalContext, gctx: GlobalContext) -> Echoed:
    """Answer with the request's fields, touching nothing else: the runtime is what is measured."""
    return Echoed(text=req.text, count=req.count)


@handler
async def echo_stream(req: EchoMany, lctx: LocalContext, gctx: GlobalContext) -> AsyncIterator[Echoed]:
    """Server streaming: the same answer ``times`` times, as fast as the caller reads them."""
    reply = Echoed(text=req.text, count=req.count)
    for _ in range(req.times):
        yield reply
