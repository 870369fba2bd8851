"""Reference servers the gateway and the worker are measured against.

* ``echo``: the cheapest ``grpc.aio`` server there is. One generic handler answers every method
  with the request's own bytes: no deserialisation, no metadata, no lifecycle. What a worker
  costs beyond this is the worker's own overhead.
* ``stream``: the cheapest ``grpc.aio`` streaming server: every method is server streaming, and
  answers the echo module's ``EchoStream`` request (read once per stream) by writing the same
  response bytes, encoded once, ``times`` times. What a streaming worker or gateway costs beyond
  this is theirs.
* ``proxy``: the naive pass-through a Python developer would write first. A generic handler
  forwards the raw request bytes and the caller's metadata over one ``grpc.aio`` channel and
  returns the raw response. It has none of the gateway's policy, so the gateway has to beat it
  while doing more.
* ``lane-proxy``: the floor of the gateway's design. The same generic handler forwards the raw
  request and the caller's metadata over the worker's lane (mutual TLS, as the gateway's
  :class:`~runtime.lane.LaneClient`) and returns the raw response: a ``grpc.aio`` server and
  the lane hop, with no policy at all. What the gateway costs beyond it is its policy chain;
  what it costs beyond the bare server, no policy chain can take away.

Run one per process, so its CPU can be read from ``/proc``::

    python -m bench.reference echo --port 0
    python -m bench.reference echo --port 0 --tls-dir DIR --module echo   # mutual TLS, as a worker
    python -m bench.reference stream --port 0
    python -m bench.reference proxy --port 0 --target 127.0.0.1:50061 --tls-dir DIR --module echo
    python -m bench.reference lane-proxy --port 0 --target 127.0.0.1:50061 --tls-dir DIR --module echo

A worker takes mutual TLS only, so the proxy in front of one dials it with the certificate of the
``gateway`` identity from ``--tls-dir`` (the deployment's CA), as a proxy of the runtime's own
would; in front of the bare echo it dials in plaintext.

Each prints ``listening 127.0.0.1:<port>`` once it accepts calls, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

__all__ = ["READY_PREFIX", "main", "serve_echo", "serve_lane_proxy", "serve_proxy", "serve_stream"]

READY_PREFIX = "listening "
"""The line each server prints once it serves: the prefix, then ``host:port``."""


def _echo_handler() -> grpc.RpcMethodHandler[bytes, bytes]:
    async def echo(request: bytes, context: Any) -> bytes:
        return request

    return grpc.unary_unary_rpc_method_handler(echo)


class _EchoEverything(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every method path gets the same prebuilt handler."""

    def __init__(self) -> None:
        self._handler = _echo_handler()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
        return self._handler


class _StreamEverything(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every method path streams: ``times`` copies of the EchoStream response, encoded once."""

    def __init__(self) -> None:
        from bench.modules import MODULES_DIR
        from runtime.versions import VersionCatalog

        catalog = VersionCatalog.from_module_dir("echo", MODULES_DIR / "echo", {})
        self._wire = catalog.wire(catalog.latest.id)
        self._handler = grpc.unary_stream_rpc_method_handler(self._stream)

    async def _stream(self, request: bytes, context: Any) -> None:
        value = self._wire.decode("EchoStreamRequest", request)
        times = int(value.pop("times", 0))
        payload = self._wire.encode("EchoStreamResponse", value)
        write = context.write
        for _ in range(times):
            await write(payload)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
        return self._handler


_NOT_FORWARDED = ("grpc-", ":")
"""Metadata the gRPC library sets itself and refuses from applications."""


def _forwarded(context: Any) -> list[tuple[str, str | bytes]]:
    """The caller's metadata, less what the gRPC library sets itself."""
    return [(key, value) for key, value in context.invocation_metadata() or () if not key.startswith(_NOT_FORWARDED)]


class _Forwarding(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every method path gets a forwarder of its own, made on its first call."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._handlers[method] = self._forwarder(method)
        return handler

    def _forwarder(self, method: str) -> grpc.RpcMethodHandler[bytes, bytes]:
        raise NotImplementedError


class _PassThrough(_Forwarding):
    """Forwards every method, bytes in and bytes out, over one channel to ``target``."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        super().__init__()
        self._channel = channel

    def _forwarder(self, method: str) -> grpc.RpcMethodHandler[bytes, bytes]:
        upstream = self._channel.unary_unary(method, request_serializer=None, response_deserializer=None)

        async def forward(request: bytes, context: Any) -> bytes:
            call = upstream(request, metadata=_forwarded(context), timeout=context.time_remaining())
            try:
                response: bytes = await call
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
                raise
            return response

        return grpc.unary_unary_rpc_method_handler(forward)


class _LanePassThrough(_Forwarding):
    """Forwards every method as unary, bytes in and bytes out, over one lane client."""

    def __init__(self, lane: Any) -> None:
        super().__init__()
        self._lane = lane

    def _forwarder(self, method: str) -> grpc.RpcMethodHandler[bytes, bytes]:
        from runtime.deadline import Deadline
        from runtime.transport import CallError

        lane = self._lane

        async def forward(request: bytes, context: Any) -> bytes:
            remaining = context.time_remaining()
            deadline = None if remaining is None else Deadline.after(remaining)
            try:
                body: bytes = (await lane.unary(method, request, _forwarded(context), deadline))[0]
            except CallError as exc:  # the worker's status (or the lane's UNAVAILABLE), as it came
                await context.abort(exc.code, exc.details)
                raise
            return body

        return grpc.unary_unary_rpc_method_handler(forward)


async def _serve(
    handler: grpc.GenericRpcHandler[bytes, bytes], host: str, port: int, credentials: grpc.ServerCredentials | None = None
) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    if credentials is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{READY_PREFIX}{host}:{bound}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop(0.5)


def _internal_tls(tls_dir: str, peer: str) -> Any:
    """The deployment's mutual TLS from ``tls_dir`` as ``peer`` (``gateway`` or a module's name),
    imported only when asked for: the plaintext references need none of the runtime."""
    from pathlib import Path

    from runtime.identity import Peer
    from runtime.tls import InternalTls

    return InternalTls.load(Path(tls_dir), Peer.gateway() if peer == "gateway" else Peer.module(peer))


async def serve_echo(host: str = "127.0.0.1", port: int = 0, tls_dir: str | None = None, module: str | None = None) -> None:
    """Serve the bare echo reference until SIGTERM; with ``tls_dir``, over mutual TLS as a worker
    of ``module`` serves (its certificate, client certificates from the deployment's CA required)."""
    credentials = None if tls_dir is None else _internal_tls(tls_dir, module or "echo").server_credentials()
    await _serve(_EchoEverything(), host, port, credentials)


async def serve_stream(host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve the bare streaming reference until SIGTERM."""
    await _serve(_StreamEverything(), host, port)


async def serve_proxy(
    target: str, host: str = "127.0.0.1", port: int = 0, tls_dir: str | None = None, module: str | None = None
) -> None:
    """Serve the naive pass-through to ``target`` until SIGTERM (mutual TLS with ``tls_dir``)."""
    if tls_dir is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        from runtime.identity import Peer

        tls = _internal_tls(tls_dir, "gateway")
        options = tls.channel_options(Peer.module(module or "echo"))
        channel = grpc.aio.secure_channel(target, tls.channel_credentials(), options=options)
    async with channel:
        await _serve(_PassThrough(channel), host, port)


async def serve_lane_proxy(target: str, tls_dir: str, module: str, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve the lane pass-through to the worker at ``target`` (its gRPC port) until SIGTERM.

    The worker is asked for its lane as the gateway's pool asks (:data:`~runtime.lane.WHERE_METHOD`),
    and called there as the gateway calls it: mutual TLS with the ``gateway`` certificate."""
    from runtime.identity import Peer
    from runtime.lane import WHERE_METHOD, LaneClient, parse_where

    tls = _internal_tls(tls_dir, "gateway")
    server = Peer.module(module)
    options = tls.channel_options(server)
    async with grpc.aio.secure_channel(target, tls.channel_credentials(), options=options) as channel:
        answer = await channel.unary_unary(WHERE_METHOD)(b"", timeout=5)
    address = parse_where(answer)
    if address is None:
        raise SystemExit(f"the worker at {target} has no lane: it answered {answer!r}")
    async with LaneClient(address, tls=tls, server=server) as lane:
        await _serve(_LanePassThrough(lane), host, port)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("echo", "stream", "proxy", "lane-proxy"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--target", help="host:port the proxy forwards to (proxy and lane-proxy: a worker's gRPC port)")
    parser.add_argument("--tls-dir", help="proxy: dial the target with mutual TLS as the gateway of this folder; "
                        "echo: serve mutual TLS as a worker of --module does")
    parser.add_argument("--module", help="the module the target must prove it serves, or the echo serves as (with --tls-dir)")
    args = parser.parse_args(argv)
    if args.kind == "echo":
        asyncio.run(serve_echo(args.host, args.port, args.tls_dir, args.module))
    elif args.kind == "stream":
        asyncio.run(serve_stream(args.host, args.port))
    elif not args.target:
        parser.error(f"{args.kind} needs --target")
    elif args.kind == "proxy":
        asyncio.run(serve_proxy(args.target, args.host, args.port, args.tls_dir, args.module))
    elif not args.tls_dir:
        parser.error("lane-proxy needs --tls-dir: workers take mutual TLS only")
    else:
        asyncio.run(serve_lane_proxy(args.target, args.tls_dir, args.module or "echo", args.host, args.port))


if __name__ == "__main__":
    main()
