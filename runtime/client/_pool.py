"""Channel pool: grpc.aio channels to every instance of every module, picked round-robin.

The pool answers one question per call: which channel should this call to module M use? It
spreads calls over M's instances in turn, skipping instances marked unhealthy while at least one
healthy instance is left. When every instance is marked unhealthy it spreads over all of them
anyway ("panic routing", as Envoy does): health marks lag reality, and trying an instance that
may have recovered beats failing every call outright.

Channels are created lazily, on the first call that needs them, so building a pool (or calling
:meth:`ChannelPool.update`) needs no running event loop. Channels belong to an address, not a
module: two modules served from one address share them.

    >>> picker = RoundRobin(["a:1", "b:1", "c:1"])
    >>> [picker.pick(unhealthy={"b:1"}) for _ in range(4)]
    ['a:1', 'c:1', 'a:1', 'c:1']
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Sequence
from typing import Any

import grpc
import grpc.aio

from runtime.errors import Unavailable

log = logging.getLogger("modrpc.client")

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "ChannelPool", "RoundRobin", "channel_options"]

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""gRPC's own default limit; the gateway's configured limit should be passed instead."""

ChannelOptions = Sequence[tuple[str, int | str]]


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, *, separate: bool = False) -> ChannelOptions:
    """Options for a channel to a worker.

    Keepalive pings every 60 s notice a dead peer behind a silent NAT or load balancer; they
    stop after two pings with no data, which stays inside the ping policy of a default gRPC
    server. ``separate`` gives the channel its own connection instead of sharing one with
    other channels to the same address, which is the point of several channels per instance.
    """
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 2),
        ("grpc.enable_retries", 0),  # retries are ours: budgeted, idempotent-only
    ]
    if separate:
        options.append(("grpc.use_local_subchannel_pool", 1))
    return options


class RoundRobin:
    """Round-robin over a fixed list of addresses, skipping the unhealthy ones when it can.

    A pure object: the health set is passed in, so the rule "an unhealthy instance gets no new
    traffic while a healthy one exists" can be tested without a network.
    """

    __slots__ = ("_addresses", "_next")

    def __init__(self, addresses: Sequence[str]) -> None:
        self._addresses = tuple(dict.fromkeys(addresses))
        self._next = 0

    @property
    def addresses(self) -> tuple[str, ...]:
        return self._addresses

    def pick(self, unhealthy: Collection[str] = frozenset()) -> str | None:
        """The next healthy address; any address if none is healthy; ``None`` if there are none."""
        addresses = self._addresses
        count = len(addresses)
        if count == 0:
            return None
        start = self._next % count
        for offset in range(count):
            index = (start + offset) % count
            if addresses[index] not in unhealthy:
                self._next = index + 1
                return addresses[index]
        self._next = start + 1
        return addresses[start]


LANE_RETRY_SECONDS = 5.0
"""After a failed lane lookup (the worker was not answering yet), how long calls keep to gRPC;
also the first wait after a lane found unreachable twice running (it doubles from there)."""
LANE_RETRY_MAX_SECONDS = 300.0
"""The longest wait before asking again for a lane that could not be reached."""


class _Instance:
    """The channels to one address, used in turn, with their method callables cached.

    With ``lanes`` on, the instance also asks the worker once for its lane address
    (:data:`runtime.lane.WHERE_METHOD`, in the background) and, once it has one, hands out a
    :class:`runtime.lane.LaneClient` for calls to it. Until then, and for good when the worker
    has no lane (UNIMPLEMENTED: an older worker, or ``lane = false``), calls go over gRPC.
    """

    __slots__ = (
        "_callables", "_channels", "_lane", "_lane_lookup", "_lane_misses", "_lane_retry_at", "_lanes", "_max_message_bytes", "_next",
        "address",
    )  # fmt: skip

    def __init__(
        self, address: str, channels: list[grpc.aio.Channel], *, lanes: bool = False, max_message_bytes: int = 0
    ) -> None:
        self.address = address
        self._channels = channels
        self._callables: list[dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]]] = [{} for _ in channels]
        self._next = 0
        self._lanes = lanes
        self._max_message_bytes = max_message_bytes
        self._lane: Any = None
        self._lane_lookup: asyncio.Task[None] | None = None
        self._lane_retry_at = 0.0
        self._lane_misses = 0

    def lane(self) -> Any:
        """The lane client of this worker, or None while calls should go over gRPC."""
        lane = self._lane
        if lane is not None or not self._lanes:
            return lane
        if self._lane_lookup is None and time.monotonic() >= self._lane_retry_at:
            self._lane_lookup = asyncio.get_running_loop().create_task(self._look_up_lane())
        return None

    async def _look_up_lane(self) -> None:
        from runtime.lane import (  # the lane imports this package
            WHERE_METHOD,
            LaneClient,
            parse_where,
        )

        where = self._channels[0].unary_unary(WHERE_METHOD, request_serializer=None, response_deserializer=None)
        try:
            answer: bytes = await where(b"", timeout=2.0)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._lanes = False  # this worker has no lane: gRPC it is, for good
                log.info("worker %s serves no lane; calls to it use gRPC", self.address)
            else:
                self._lane_retry_at = time.monotonic() + LANE_RETRY_SECONDS
            return
        finally:
            self._lane_lookup = None
        named = parse_where(answer)
        if named is None:
            self._lanes = False
            log.warning("worker %s serves a lane this gateway cannot speak (%r); using gRPC", self.address, answer[:40])
            return
        # The port the worker names, on the host this pool already reaches it at: a worker bound
        # to 0.0.0.0 names that address, which means nothing to the caller.
        port = named.rpartition(":")[2]
        address = f"{self.address.rpartition(':')[0]}:{port}"
        self._lane = LaneClient(address, max_message_bytes=self._max_message_bytes)
        log.debug("worker %s: calls go over its lane at %s", self.address, address)

    def channel(self) -> tuple[int, grpc.aio.Channel]:
        index = self._next % len(self._channels)
        self._next = index + 1
        return index, self._channels[index]

    def unary_unary(self, method_path: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        index, channel = self.channel()
        cache = self._callables[index]
        callable_ = cache.get(method_path)
        if callable_ is None:
            # No serializers: payloads are bytes on both sides and nothing is decoded here.
            callable_ = channel.unary_unary(method_path, request_serializer=None, response_deserializer=None)
            cache[method_path] = callable_
        return callable_

    def lane_failed(self, lane: Any, *, unreached: bool) -> Any:
        """The lane itself failed a call: stop handing it out, ask the worker again, and return
        the lane for the caller to close (None when it was retired already).

        The gRPC address is what names a worker; its lane port may change when a worker is
        restarted on the same gRPC port, and then only a fresh lookup finds the new one. A lane
        that never connected at all (``unreached``: a port the worker names but this host cannot
        reach, as behind a port mapping) is asked for later and later, calls keeping to gRPC
        meanwhile; one that worked before is asked for again at once.
        """
        if self._lane is not lane or lane is None:
            return None
        self._lane = None
        delay = 0.0
        if unreached and not lane.connected:
            if self._lane_misses:
                delay = min(LANE_RETRY_SECONDS * 2 ** (self._lane_misses - 1), LANE_RETRY_MAX_SECONDS)
            self._lane_misses += 1
        else:
            self._lane_misses = 0
        self._lane_retry_at = time.monotonic() + delay
        return lane

    async def close(self, grace: float | None) -> None:
        self._lanes = False
        if self._lane_lookup is not None:
            self._lane_lookup.cancel()
        lane, self._lane = self._lane, None
        closing = [channel.close(grace) for channel in self._channels]
        if lane is not None:
            closing.append(lane.close(grace))
        await asyncio.gather(*closing)


class ChannelPool:
    """The channels of a module client: per module, over its instances, with health marks.

    ``interceptors`` (e.g. :func:`runtime.client.client_interceptors`) are attached to every
    channel; the same list objects are reused, never rebuilt per call. ``close_grace`` is how
    long calls in flight on a channel whose instance was removed may still finish. ``lanes``:
    calls to workers that serve a lane (:mod:`runtime.lane`) go over it instead of gRPC.
    """

    def __init__(
        self,
        *,
        channels_per_instance: int = 1,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        # grpc-stubs cannot spell the aio interceptor types, hence Any.
        interceptors: Sequence[Any] = (),
        close_grace: float = 5.0,
        lanes: bool = False,
    ) -> None:
        if channels_per_instance < 1:
            raise ValueError("channels_per_instance must be at least 1")
        self._channels_per_instance = channels_per_instance
        self._options = channel_options(max_message_bytes, separate=channels_per_instance > 1)
        self._interceptors = list(interceptors)
        self._close_grace = close_grace
        self._lanes = lanes
        self._max_message_bytes = max_message_bytes
        self._pickers: dict[str, RoundRobin] = {}
        self._instances: dict[str, _Instance] = {}
        self._unhealthy: set[str] = set()
        self._retired: list[_Instance] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> ChannelPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- membership and health -------------------------------------------------------------

    def update(self, module: str, addresses: Sequence[str]) -> None:
        """Replace the instances of ``module``. Channels no module uses any more are closed,
        giving their calls in flight ``close_grace`` seconds; an empty list removes the module.
        """
        if self._closed:
            raise Unavailable("the module client is closed")
        current = self._pickers.get(module)
        if current is not None and current.addresses == tuple(dict.fromkeys(addresses)):
            return  # unchanged: keep the round-robin position
        if addresses:
            self._pickers[module] = RoundRobin(addresses)
        else:
            self._pickers.pop(module, None)
        in_use = {address for picker in self._pickers.values() for address in picker.addresses}
        for address in [a for a in self._instances if a not in in_use]:
            self._retire(self._instances.pop(address))
        self._unhealthy &= in_use

    def mark_unhealthy(self, address: str) -> None:
        """Send no new calls to ``address`` while another instance of its module is healthy."""
        self._unhealthy.add(address)

    def mark_healthy(self, address: str) -> None:
        self._unhealthy.discard(address)

    def modules(self) -> tuple[str, ...]:
        return tuple(self._pickers)

    def addresses(self, module: str) -> tuple[str, ...]:
        """The instances of ``module``, healthy or not; empty when the module is unknown."""
        picker = self._pickers.get(module)
        return () if picker is None else picker.addresses

    def is_healthy(self, address: str) -> bool:
        return address not in self._unhealthy

    # -- picking -----------------------------------------------------------------------------

    def _instance(self, module: str) -> _Instance:
        if self._closed:
            raise Unavailable("the module client is closed")
        picker = self._pickers.get(module)
        address = None if picker is None else picker.pick(self._unhealthy)
        if address is None:
            raise Unavailable(f"no instance of module {module!r} is known")
        instance = self._instances.get(address)
        if instance is None:
            channels = [
                grpc.aio.insecure_channel(address, options=self._options, interceptors=self._interceptors)
                for _ in range(self._channels_per_instance)
            ]
            instance = self._instances[address] = _Instance(
                address, channels, lanes=self._lanes, max_message_bytes=self._max_message_bytes
            )
        return instance

    def pick(self, module: str) -> tuple[str, grpc.aio.Channel]:
        """The address and channel for the next call to ``module``.

        Raises :class:`~runtime.errors.Unavailable` naming the module when it has no instance.
        Must be called with the event loop running (channels are created on first use).
        """
        instance = self._instance(module)
        return instance.address, instance.channel()[1]

    def unary_unary(self, module: str, method_path: str) -> tuple[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]]:
        """Like :meth:`pick`, but the raw-bytes unary callable for ``method_path``, cached."""
        instance = self._instance(module)
        return instance.address, instance.unary_unary(method_path)

    def route(
        self, module: str, method_path: str
    ) -> tuple[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes], Any]:
        """Like :meth:`unary_unary`, plus the instance's lane client when calls should use it."""
        instance = self._instance(module)
        return instance.address, instance.unary_unary(method_path), instance.lane()

    def lane_failed(self, address: str, lane: Any, *, unreached: bool = False) -> None:
        """A call over the lane of ``address`` was UNAVAILABLE: look that worker's lane up again
        (later and later while it cannot be ``unreached``)."""
        instance = self._instances.get(address)
        retired = None if instance is None else instance.lane_failed(lane, unreached=unreached)
        if retired is not None:  # calls still out on it get the same grace as a retired channel
            self._track(asyncio.get_running_loop().create_task(retired.close(self._close_grace)))

    # -- lifecycle ---------------------------------------------------------------------------

    def _retire(self, instance: _Instance) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._retired.append(instance)  # closed by close(), which runs on a loop
            return
        self._track(loop.create_task(instance.close(self._close_grace)))

    def _track(self, task: asyncio.Task[None]) -> None:
        """Keep a closing task until it ends, so that :meth:`close` can wait for it."""
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self, grace: float | None = None) -> None:
        """Close every channel. ``grace``: seconds calls in flight may still take (None: cancel).

        Safe to call twice; after it, calls raise :class:`~runtime.errors.Unavailable`.
        """
        if self._closed:
            return
        self._closed = True
        self._pickers.clear()
        instances = [*self._instances.values(), *self._retired]
        self._instances.clear()
        self._retired.clear()
        self._unhealthy.clear()
        await asyncio.gather(*(instance.close(grace) for instance in instances))
        if self._closing:
            # Channels retired earlier are still draining; wait for them, whatever became of them.
            await asyncio.gather(*self._closing, return_exceptions=True)
