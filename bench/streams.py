"""Server-streaming throughput: messages per second through the gateway ÷ a bare grpc.aio server.

The measured call is ``echo.EchoStream``: one request, then ``times`` identical response
messages, which the handler yields as fast as the caller reads them (:mod:`bench.modules.echo`),
through the worker's whole lifecycle (each message validated, encoded, flow-controlled). The
reference is :mod:`bench.reference` ``stream``: the cheapest grpc.aio streaming server, writing
the same response bytes, encoded once, ``times`` times. Both are read by the same grpc.aio
client in this process, one stream at a time (``c1``) and four at once (``c4``), and each figure
keeps its best round. CPU per message is read from ``/proc`` for each process in the path.

The worker alone (``direct``) is read over mutual TLS as the gateway reads it (its certificate
from the run's development CA, the caller's principal in ``x-modrpc-principal``): a worker takes
nothing else, and this client, unlike h2load, can present a certificate.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Any

import grpc
import grpc.aio

from bench.modules import MODULES_DIR
from bench.topology import MODULE, Target, Topology
from runtime.identity import Peer
from runtime.tls import InternalTls
from runtime.versions import VersionCatalog
from runtime.wire import method_path, request_message, response_message

__all__ = ["STREAM_TARGETS", "StreamProfile", "measure_streams", "stream_request"]

METHOD = "EchoStream"
STREAM_TARGETS = ("bare_stream", "direct", "gateway", "gateway_grpc")
"""What is measured: the bare reference, the worker alone, and the gateway over the lane and over gRPC."""


@dataclass(frozen=True)
class StreamProfile:
    name: str
    streams: int
    """Streams read at once."""
    messages: int
    """Messages per stream."""


FULL = (StreamProfile("c1", 1, 40_000), StreamProfile("c4", 4, 20_000))
SMOKE = (StreamProfile("c1", 1, 300), StreamProfile("c4", 4, 100))


def stream_request(times: int) -> tuple[bytes, bytes]:
    """The EchoStream request for ``times`` messages, and the bytes of each response message."""
    catalog = VersionCatalog.from_module_dir(MODULE, MODULES_DIR / MODULE, {})
    wire = catalog.wire(catalog.latest.id)
    value = {"text": "modrpc benchmark: the same bytes there and back", "count": 42}
    request = wire.encode(request_message(METHOD), {**value, "times": times})
    return request, wire.encode(response_message(METHOD), value)


def _channel(target: Target, tls: InternalTls | None) -> grpc.aio.Channel:
    """Plaintext to a gateway or a reference server; mutual TLS as the gateway to the worker."""
    if target.name != "direct":
        return grpc.aio.insecure_channel(target.address)
    assert tls is not None
    return grpc.aio.secure_channel(
        target.address, tls.channel_credentials(), options=tls.channel_options(Peer.module(MODULE))
    )


async def _read(
    target: Target,
    tls: InternalTls | None,
    request: bytes,
    response: bytes,
    metadata: tuple[tuple[str, str], ...],
    expected: int,
) -> None:
    address = target.address
    async with _channel(target, tls) as channel:
        call = channel.unary_stream(method_path(MODULE, METHOD), request_serializer=None, response_deserializer=None)(
            request, metadata=metadata, timeout=600
        )
        seen = 0
        async for message in call:
            if message != response:
                raise AssertionError(f"{address}: message {seen + 1} is not the expected response")
            seen += 1
    if seen != expected:
        raise RuntimeError(f"{address}: {seen} of {expected} messages came back")


async def _once(
    target: Target, tls: InternalTls | None, profile: StreamProfile, metadata: tuple[tuple[str, str], ...]
) -> dict[str, Any]:
    request, response = stream_request(profile.messages)
    cpu_before = {role: server.cpu_seconds() for role, server in target.servers.items()}
    started = time.perf_counter()
    await asyncio.gather(
        *(_read(target, tls, request, response, metadata, profile.messages) for _ in range(profile.streams))
    )
    elapsed = time.perf_counter() - started
    total = profile.streams * profile.messages
    return {
        "messages": total,
        "seconds": elapsed,
        "per_second": total / elapsed,
        "cpu_us_per_message": {
            role: (server.cpu_seconds() - cpu_before[role]) / total * 1e6 for role, server in target.servers.items()
        },
    }


async def measure_streams(
    top: Topology, *, rounds: int, profiles: tuple[StreamProfile, ...] = FULL, log: Any = print
) -> dict[str, dict[str, Any]]:
    """Each streaming target at each profile, best of ``rounds``: target → profile → figures."""
    metadata = tuple((k, v) for k, v in top.call.metadata if k != "x-api-version")
    targets = dict(top.targets)
    tls = None
    if "gateway" in targets and "direct" not in targets:  # the gateway's own worker, as it reaches it
        tls = InternalTls.load(top.workdir / "tls", Peer.gateway())
        worker = targets["gateway"].servers["worker"]
        targets["direct"] = replace(targets["gateway"], name="direct", address=worker.address, servers={"worker": worker})
    names = [name for name in STREAM_TARGETS if name in targets]
    for name in names:  # checked before anything is timed
        await _once(targets[name], tls, StreamProfile("check", 1, 50), metadata)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {n: {p.name: [] for p in profiles} for n in names}
    for index in range(rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            for profile in profiles:
                log(f"round {index + 1}/{rounds}: {name} streaming at {profile.name} ({profile.streams * profile.messages} messages)")
                results[name][profile.name].append(await _once(targets[name], tls, profile, metadata))
    return {
        name: {
            profile: {
                **max(runs, key=lambda r: r["per_second"]),
                "cpu_us_per_message": {
                    role: min(r["cpu_us_per_message"][role] for r in runs) for role in runs[0]["cpu_us_per_message"]
                },
            }
            for profile, runs in by_profile.items()
        }
        for name, by_profile in results.items()
    }
