"""The instance pool: a :class:`~runtime.transport.Transport` to every instance of every module.

The pool answers one question per call: which transport should this call to module M use? It
spreads calls over M's instances in turn, skipping instances that were ejected while at least
one other is left. A call that finds no instance to use waits for one, within its deadline
(:meth:`InstancePool.acquire`): a module with no instance right now (its workers restarting)
may have one in a moment, and the pool wakes waiting calls whenever its instances change. When
every instance is ejected a call waits for a change too, at most half of what is left of its
deadline or until the first ejection ends, and then uses an ejected instance anyway ("panic
routing", as Envoy does): an ejection may outlast the fault, and trying an instance that may
have recovered beats failing the call outright.

Ejection is outlier detection in the manner of Envoy's: an instance that fails a call at the
transport (the connection was refused or lost) is ejected at once, and one that misses
``consecutive_deadlines`` deadlines in a row (it hangs) is ejected too. An ejection lasts
``eject_seconds``, doubled for each further ejection in a row, up to ten times that; a call
that succeeds ends the streak.

An instance is one worker address. Its transport prefers the worker's lane
(:mod:`runtime.lane`) and falls back to gRPC, so the module client never knows which carried a
call. Both are mutual TLS when the pool has an identity (:class:`~runtime.tls.InternalTls`): this
process's certificate goes with every call, and a worker of module M must prove it is M. A module
served in this process (:class:`~runtime.transport.InProcessModules`) is reached through its
endpoints directly, as this process's identity.

    >>> picker = RoundRobin(["a:1", "b:1", "c:1"])
    >>> [picker.pick(skip={"b:1"}) for _ in range(4)]
    ['a:1', 'c:1', 'a:1', 'c:1']
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, Collection, Sequence
from dataclasses import dataclass

import grpc

from runtime.deadline import Clock, Deadline
from runtime.errors import Unavailable
from runtime.identity import Peer, current_peer
from runtime.lane import PROTOCOL, WHERE_METHOD, LaneClient, LaneStream, parse_where
from runtime.tls import InternalTls
from runtime.transport import (
    DEFAULT_MAX_MESSAGE_BYTES,
    CallError,
    Disconnected,
    GrpcTransport,
    InProcessModules,
    Metadata,
    MetadataIn,
    Reply,
    StreamCall,
    Transport,
    TransportError,
    Unreached,
)

log = logging.getLogger("modrpc.client")

__all__ = ["IN_PROCESS", "InstancePool", "Outliers", "RoundRobin"]

IN_PROCESS = "in-process"
"""The address :meth:`InstancePool.pick` names for a module served in this process."""

LANE_RETRY_SECONDS = 5.0
"""After a failed lane lookup (the worker was not answering yet), how long calls keep to gRPC;
also the first wait after a lane found unreachable twice running (it doubles from there)."""
LANE_RETRY_MAX_SECONDS = 300.0
"""The longest wait before asking again for a lane that could not be reached."""
NO_DEADLINE_WAIT_SECONDS = 5.0
"""How long a call without a deadline waits for an instance of a module that has none."""


class RoundRobin:
    """Round-robin over a fixed list of addresses, skipping some when it can.

    A pure object: the set to skip is passed in, so the rule "an ejected instance gets no new
    traffic while another exists" can be tested without a network.
    """

    __slots__ = ("_addresses", "_next")

    def __init__(self, addresses: Sequence[str]) -> None:
        self._addresses = tuple(dict.fromkeys(addresses))
        self._next = 0

    @property
    def addresses(self) -> tuple[str, ...]:
        return self._addresses

    def pick(self, skip: Collection[str] = frozenset()) -> str | None:
        """The next address not in ``skip``; any address if all are; ``None`` if there are none."""
        addresses = self._addresses
        count = len(addresses)
        if count == 0:
            return None
        start = self._next % count
        if skip:
            for offset in range(count):
                index = (start + offset) % count
                if addresses[index] not in skip:
                    self._next = index + 1
                    return addresses[index]
        self._next = start + 1
        return addresses[start]


@dataclass(slots=True)
class _Streak:
    deadlines: int = 0
    """Deadlines missed in a row."""
    ejections: int = 0
    """Ejections in a row (each doubles the next one)."""
    until: float = 0.0
    """Ejected until this instant on the pool's clock (0: not ejected)."""


class Outliers:
    """Which instances are ejected, and until when (outlier detection, as Envoy's).

        >>> now = [0.0]
        >>> outliers = Outliers(eject_seconds=5.0, clock=lambda: now[0])
        >>> outliers.failed("a:1"); sorted(outliers.ejected())
        ['a:1']
        >>> now[0] = 6.0; sorted(outliers.ejected())
        []
    """

    __slots__ = ("_clock", "_consecutive_deadlines", "_eject_seconds", "_ejected", "_streaks")

    def __init__(self, *, eject_seconds: float = 5.0, consecutive_deadlines: int = 3, clock: Clock = time.monotonic) -> None:
        self._eject_seconds = eject_seconds
        self._consecutive_deadlines = consecutive_deadlines
        self._clock = clock
        self._streaks: dict[str, _Streak] = {}
        self._ejected: set[str] = set()

    def ejected(self) -> Collection[str]:
        """The addresses ejected right now (expired ejections end here)."""
        if self._ejected:
            now = self._clock()
            for address in [a for a in self._ejected if self._streaks[a].until <= now]:
                self._ejected.discard(address)
        return self._ejected

    def failed(self, address: str) -> None:
        """A call failed at the transport: eject at once."""
        self._eject(self._streaks.setdefault(address, _Streak()), address)

    def missed_deadline(self, address: str) -> None:
        """A call's deadline passed with no answer: eject after enough of them in a row."""
        streak = self._streaks.setdefault(address, _Streak())
        streak.deadlines += 1
        if streak.deadlines >= self._consecutive_deadlines:
            self._eject(streak, address)

    def succeeded(self, address: str) -> None:
        """A call was answered (with any status): the instance is alive and responsive."""
        streak = self._streaks.get(address)
        if streak is not None and address not in self._ejected:
            del self._streaks[address]

    def returns_in(self, addresses: Collection[str]) -> float | None:
        """Seconds until the first ejected one of ``addresses`` comes back; None if none is ejected."""
        ends = [self._streaks[a].until for a in addresses if a in self._ejected]
        return max(0.0, min(ends) - self._clock()) if ends else None

    def observe(self, address: str, exc: CallError) -> None:
        """What a failed call says about its instance: a status it sent means it is alive; no
        answer before the deadline, or a broken connection, count against it."""
        if not isinstance(exc, TransportError):
            self.succeeded(address)
        elif exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            self.missed_deadline(address)
        elif exc.code == grpc.StatusCode.UNAVAILABLE:
            self.failed(address)

    def forget(self, addresses: Collection[str]) -> None:
        """Drop what is known of instances no module uses any more."""
        for address in addresses:
            self._streaks.pop(address, None)
            self._ejected.discard(address)

    def _eject(self, streak: _Streak, address: str) -> None:
        seconds = min(self._eject_seconds * 2**streak.ejections, self._eject_seconds * 10)
        streak.ejections += 1
        streak.deadlines = 0
        streak.until = self._clock() + seconds
        if address not in self._ejected:
            self._ejected.add(address)
            log.warning("instance %s ejected for %.1fs (%d in a row)", address, seconds, streak.ejections)


class _LaneStream:
    """A stream over a worker's lane that moves to gRPC when the lane cannot be reached.

    The lane connects before it takes anything from the request iterator, so a stream it could
    not start goes over gRPC untouched, as a unary call does.
    """

    __slots__ = ("_args", "_call", "_lane", "_worker")

    def __init__(
        self, worker: _Worker, lane: LaneClient, method: str, requests: AsyncIterable[bytes], metadata: MetadataIn,
        deadline: Deadline | None,
    ) -> None:  # fmt: skip
        self._worker = worker
        self._lane = lane
        self._args = (method, requests, metadata, deadline)
        self._call: StreamCall = lane.stream(method, requests, metadata, deadline)

    def __aiter__(self) -> _LaneStream:
        return self

    async def __anext__(self) -> bytes:
        call = self._call
        try:
            return await anext(call)
        except Unreached:
            if not isinstance(call, LaneStream) or call.started:
                raise  # refused after the messages began: the module client decides
            self._worker._lane_failed(self._lane, unreached=True)
            self._call = self._worker._grpc.stream(*self._args)
            return await anext(self._call)
        except Disconnected:
            self._worker._lane_failed(self._lane, unreached=False)
            raise

    @property
    def trailers(self) -> Metadata:
        return self._call.trailers

    async def aclose(self) -> None:
        await self._call.aclose()


class _Worker:
    """The transport to one worker address: its lane when it has one, gRPC otherwise.

    The lane is looked up once, in the background, through :data:`~runtime.lane.WHERE_METHOD`
    on the worker's gRPC port; until it is known, and for good when the worker has none
    (UNIMPLEMENTED: an older worker, or ``lane = false``), calls go over gRPC. A call the lane
    could not even send (:class:`~runtime.transport.Unreached`) goes over gRPC at once.
    """

    __slots__ = (
        "_close_grace", "_grpc", "_lane", "_lane_lookup", "_lane_misses", "_lane_retry_at", "_lanes",
        "_max_message_bytes", "_retired", "_server", "_tls", "address",
    )  # fmt: skip

    def __init__(
        self,
        address: str,
        *,
        channels: int,
        max_message_bytes: int,
        lanes: bool,
        close_grace: float,
        tls: InternalTls | None = None,
        server: Peer | None = None,
    ) -> None:
        self.address = address
        self._close_grace = close_grace
        self._tls = tls
        self._server = server
        self._grpc = GrpcTransport(
            address, channels=channels, max_message_bytes=max_message_bytes, tls=tls, server=server
        )
        self._max_message_bytes = max_message_bytes
        self._lanes = lanes
        self._lane: LaneClient | None = None
        self._lane_lookup: asyncio.Task[None] | None = None
        self._lane_retry_at = 0.0
        self._lane_misses = 0
        self._retired: set[asyncio.Task[None]] = set()

    async def unary(self, method: str, payload: bytes, metadata: MetadataIn, deadline: Deadline | None) -> Reply:
        lane = self._lane
        if lane is None and self._lanes:
            self._look_up_lane()
        elif lane is not None:
            try:
                return await lane.unary(method, payload, metadata, deadline)
            except Unreached:  # nothing was sent: the same call goes over gRPC
                self._lane_failed(lane, unreached=True)
            except Disconnected:
                self._lane_failed(lane, unreached=False)
                raise
        return await self._grpc.unary(method, payload, metadata, deadline)

    def stream(
        self, method: str, requests: AsyncIterable[bytes], metadata: MetadataIn, deadline: Deadline | None
    ) -> StreamCall:
        lane = self._lane
        if lane is None and self._lanes:
            self._look_up_lane()
        elif lane is not None:
            return _LaneStream(self, lane, method, requests, metadata, deadline)
        return self._grpc.stream(method, requests, metadata, deadline)

    def _look_up_lane(self) -> None:
        if self._lane_lookup is None and time.monotonic() >= self._lane_retry_at:
            self._lane_lookup = asyncio.get_running_loop().create_task(self._where())

    async def _where(self) -> None:
        try:
            answer, _ = await self._grpc.unary(WHERE_METHOD, b"", (), Deadline.after(2.0))
        except CallError as exc:
            if exc.code == grpc.StatusCode.UNIMPLEMENTED:
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
            log.warning("worker %s serves a lane other than %s (%r); using gRPC", self.address, PROTOCOL, answer[:40])
            return
        # The port the worker names, on the host this pool already reaches it at: a worker bound
        # to 0.0.0.0 names that address, which means nothing to the caller.
        port = named.rpartition(":")[2]
        address = f"{self.address.rpartition(':')[0]}:{port}"
        if self._lanes:
            self._lane = LaneClient(
                address, max_message_bytes=self._max_message_bytes, tls=self._tls, server=self._server
            )
            log.debug("worker %s: calls go over its lane at %s", self.address, address)

    def _lane_failed(self, lane: LaneClient, *, unreached: bool) -> None:
        """The lane itself failed a call: stop using it, ask the worker again, close it.

        The gRPC address is what names a worker; its lane port may change when a worker is
        restarted on the same gRPC port, and then only a fresh lookup finds the new one. A lane
        that never connected at all (a port the worker names but this host cannot reach, as
        behind a port mapping) is asked for later and later, calls keeping to gRPC meanwhile;
        one that worked before is asked for again at once.
        """
        if self._lane is not lane:
            return
        self._lane = None
        delay = 0.0
        if unreached and not lane.connected:
            if self._lane_misses:
                delay = min(LANE_RETRY_SECONDS * 2 ** (self._lane_misses - 1), LANE_RETRY_MAX_SECONDS)
            self._lane_misses += 1
        else:
            self._lane_misses = 0
        self._lane_retry_at = time.monotonic() + delay
        # Calls still out on it get the same grace as a retired instance.
        task = asyncio.get_running_loop().create_task(lane.close(self._close_grace))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self, grace: float | None) -> None:
        self._lanes = False
        if self._lane_lookup is not None:
            self._lane_lookup.cancel()
        lane, self._lane = self._lane, None
        closing = [self._grpc.close(grace), *self._retired]
        if lane is not None:
            closing.append(lane.close(grace))
        await asyncio.gather(*closing, return_exceptions=True)



class _AsPeer:
    """A module served in this process, called as this process's identity: the in-process
    counterpart of the certificate a call over the network carries."""

    __slots__ = ("_peer", "_transport")

    def __init__(self, transport: Transport, peer: Peer | None) -> None:
        self._transport = transport
        self._peer = peer

    async def unary(self, method: str, payload: bytes, metadata: MetadataIn, deadline: Deadline | None) -> Reply:
        token = current_peer.set(self._peer)
        try:
            return await self._transport.unary(method, payload, metadata, deadline)
        finally:
            current_peer.reset(token)

    def stream(
        self, method: str, requests: AsyncIterable[bytes], metadata: MetadataIn, deadline: Deadline | None
    ) -> StreamCall:
        # The endpoint starts the stream's task now, and the task keeps the context it starts in.
        token = current_peer.set(self._peer)
        try:
            return self._transport.stream(method, requests, metadata, deadline)
        finally:
            current_peer.reset(token)


class InstancePool:
    """Transports to the instances of each module key, picked round-robin, outliers ejected.

    A key is a module name, or ``module@version`` for the gateway, which keeps apart the
    instances serving each version. ``close_grace`` is how long calls in flight to an instance
    that left may still finish; ``lanes``: calls to workers that serve a lane go over it.
    ``tls``: this process's identity; every call to a worker is then mutual TLS (without it,
    calls are plaintext, which workers refuse: only tests of the pool itself do without).
    """

    def __init__(
        self,
        *,
        channels_per_instance: int = 1,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        close_grace: float = 5.0,
        lanes: bool = False,
        local: InProcessModules | None = None,
        outliers: Outliers | None = None,
        tls: InternalTls | None = None,
    ) -> None:
        if channels_per_instance < 1:
            raise ValueError("channels_per_instance must be at least 1")
        self._channels = channels_per_instance
        self._close_grace = close_grace
        self._lanes = lanes
        self._max_message_bytes = max_message_bytes
        self.local = local
        self.tls = tls
        self._local_calls: dict[Transport, _AsPeer] = {}
        self.outliers = outliers or Outliers()
        self._pickers: dict[str, RoundRobin] = {}
        self._workers: dict[str, _Worker] = {}
        self._retired: list[_Worker] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self._changed: asyncio.Future[None] | None = None
        """Settled (and replaced) whenever the instances change: calls waiting for one look again."""
        self._draining = False

    async def __aenter__(self) -> InstancePool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- membership --------------------------------------------------------------------------

    def update(self, key: str, addresses: Sequence[str]) -> None:
        """Replace the instances of ``key``. Instances no key uses any more are closed, giving
        their calls in flight ``close_grace`` seconds; an empty list removes the key.
        """
        if self._closed:
            raise Unavailable("the module client is closed")
        current = self._pickers.get(key)
        if current is not None and current.addresses == tuple(dict.fromkeys(addresses)):
            return  # unchanged: keep the round-robin position
        if addresses:
            self._pickers[key] = RoundRobin(addresses)
        else:
            self._pickers.pop(key, None)
        self._notify()
        in_use = {address for picker in self._pickers.values() for address in picker.addresses}
        gone = [a for a in (current.addresses if current is not None else ()) if a not in in_use]
        for address in gone:
            worker = self._workers.pop(address, None)
            if worker is not None:
                self._retire(worker)
        self.outliers.forget(gone)

    def keys(self) -> tuple[str, ...]:
        return tuple(self._pickers)

    def addresses(self, key: str) -> tuple[str, ...]:
        """The instances of ``key``, ejected or not; empty when the key is unknown."""
        picker = self._pickers.get(key)
        return () if picker is None else picker.addresses

    def known(self, key: str) -> bool:
        """Whether calls to ``key`` have somewhere to go: in process, or some instance."""
        return (self.local is not None and self.local.lookup(key) is not None) or key in self._pickers

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    # -- picking -----------------------------------------------------------------------------

    def pick(self, key: str) -> tuple[str, Transport]:
        """The address and transport for the next call to ``key`` (:data:`IN_PROCESS` for a
        module served in this process), an ejected instance when all are (panic routing).

        Raises :class:`~runtime.errors.Unavailable` naming the module when it has no instance.
        Must be called with the event loop running (channels are created on first use).
        """
        picked = self._pick(key, panic=True)
        if picked is None:
            # The key's form (module@version) is the pool's own: callers read module and version.
            raise Unavailable(f"no instance of {key.replace('@', ' ')} is known")
        return picked

    def pick_healthy(self, key: str, avoid: Collection[str] = ()) -> tuple[str, Transport] | None:
        """Like :meth:`pick`, but None instead of an ejected instance or none: then
        :meth:`acquire` waits for one. ``avoid``: instances this call already tried, skipped
        while another healthy one exists (Envoy's ``previous_hosts`` retry predicate: a retry
        after a timeout should not go back to the instance that may be hung)."""
        return self._pick(key, panic=False, avoid=avoid)

    async def acquire(self, key: str, deadline: Deadline | None, avoid: Collection[str] = ()) -> tuple[str, Transport]:
        """Like :meth:`pick`, but a call that finds no instance to use waits for one.

        With no instance of ``key`` at all, it waits for one to be added until ``deadline``
        (:data:`NO_DEADLINE_WAIT_SECONDS` without one), then raises
        :class:`~runtime.errors.Unavailable` naming the module. With every instance ejected, it
        waits for a change at most half of what is left of ``deadline`` or until the first
        ejection ends, whichever is sooner, and then picks an ejected one (panic routing).
        """
        picked = self._pick(key, panic=False, avoid=avoid)
        if picked is not None:
            return picked
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        left = NO_DEADLINE_WAIT_SECONDS if deadline is None else deadline.remaining()
        give_up, panic_at = now + left, now + left / 2
        while not self._draining:
            picker = self._pickers.get(key)
            addresses = () if picker is None else picker.addresses
            now = time.monotonic()
            wait = give_up - now
            if addresses:
                back = self.outliers.returns_in(addresses)
                wait = min(panic_at - now, wait if back is None else back)
            if wait <= 0:
                break
            if self._changed is None:
                self._changed = loop.create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await asyncio.shield(self._changed)
            picked = self._pick(key, panic=False)
            if picked is not None:
                return picked
        return self.pick(key)

    def _pick(self, key: str, *, panic: bool, avoid: Collection[str] = ()) -> tuple[str, Transport] | None:
        if self._closed:
            raise Unavailable("the module client is closed")
        local = self.local.lookup(key) if self.local is not None else None
        if local is not None:
            as_peer = self._local_calls.get(local)
            if as_peer is None:
                as_peer = self._local_calls[local] = _AsPeer(local, self.tls.peer if self.tls else None)
            return IN_PROCESS, as_peer
        picker = self._pickers.get(key)
        if picker is None:
            return None
        ejected = self.outliers.ejected()
        address = None
        if avoid:
            skip = set(ejected).union(avoid)
            address = picker.pick(skip)
            if address in skip:  # nothing else: the rule without ``avoid`` decides
                address = None
        if address is None:
            address = picker.pick(ejected)
        if address is None or (not panic and address in ejected):
            return None
        worker = self._workers.get(address)
        if worker is None:
            worker = self._workers[address] = _Worker(
                address,
                channels=self._channels,
                max_message_bytes=self._max_message_bytes,
                lanes=self._lanes,
                close_grace=self._close_grace,
                tls=self.tls,
                server=Peer.module(key.partition("@")[0]) if self.tls is not None else None,
            )
        return address, worker

    # -- lifecycle ---------------------------------------------------------------------------

    def drain(self) -> None:
        """Stop making calls wait for an instance (their owner is shutting down): calls waiting
        now, and later ones, pick what there is or fail at once."""
        self._draining = True
        self._notify()

    def _retire(self, worker: _Worker) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._retired.append(worker)  # closed by close(), which runs on a loop
            return
        task = loop.create_task(worker.close(self._close_grace))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self, grace: float | None = None) -> None:
        """Close every transport. ``grace``: seconds calls in flight may still take (None: cancel).

        Safe to call twice; after it, calls raise :class:`~runtime.errors.Unavailable`.
        """
        if self._closed:
            return
        self._closed = True
        self._pickers.clear()
        self._notify()
        workers = [*self._workers.values(), *self._retired]
        self._workers.clear()
        self._retired.clear()
        await asyncio.gather(*(worker.close(grace) for worker in workers))
        if self._closing:
            # Instances retired earlier are still draining; wait for them, whatever became of them.
            await asyncio.gather(*self._closing, return_exceptions=True)
