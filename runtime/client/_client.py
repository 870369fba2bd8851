"""The module client: one unary call to a module, as raw bytes, with deadline, retries and tracing.

    async with ModuleClient(ChannelPool(interceptors=client_interceptors())) as client:
        client.pool.update("users", ["127.0.0.1:50061", "127.0.0.1:50062"])
        body, metadata = await client.call_raw(
            "users", "/users.v1.Users/GetUser", request_bytes,
            metadata=[("x-request-id", rid)], deadline=Deadline.after(2.0), idempotent=True,
        )

Nothing is decoded: the gateway passes request bytes through when no transformer applies, and
typed clients serialise before and after. A module registered in the client's
:class:`~runtime.client.LocalTransport` is called in process instead, with the same bytes,
metadata, deadline, retries and tracing. gRPC failures come back as :mod:`runtime.errors`
types (see :mod:`runtime.client._translate`), with the ``AioRpcError`` as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from runtime.client._local import Disconnected, LocalAbort, LocalCall, LocalTransport, Unreached
from runtime.client._pool import ChannelPool
from runtime.client._retry import RetryBudget, RetryPolicy, Sleep, is_retryable
from runtime.client._tracing import ClientTracer
from runtime.client._translate import error_from_local_abort, error_from_rpc_error
from runtime.deadline import Clock, Deadline
from runtime.errors import DeadlineExceeded, Unavailable

__all__ = ["ModuleClient", "ResponseMetadata"]

ResponseMetadata = tuple[tuple[str, str | bytes], ...]
"""Initial then trailing metadata of a response; ``-bin`` values are bytes."""


class ModuleClient:
    """Calls modules through a :class:`ChannelPool`, which it owns and closes.

    Each module gets its own :class:`RetryBudget`, so one failing module cannot spend the
    retries of the others. ``sleep`` and ``clock`` are for tests: backoff without waiting, a
    budget on a clock they control.

    ``tracing`` starts a client span per attempt inline (see :class:`ClientTracer`); give the pool
    no tracing interceptor then, or each call is traced twice. ``local`` names the modules
    served in this process (:class:`LocalTransport`): their calls skip the network entirely.
    """

    def __init__(
        self,
        pool: ChannelPool,
        *,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        tracing: ClientTracer | None = None,
        local: LocalTransport | None = None,
    ) -> None:
        self._pool = pool
        self._policy = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._tracing = tracing
        self._local = local
        self._budgets: dict[str, RetryBudget] = {}

    @property
    def pool(self) -> ChannelPool:
        return self._pool

    @property
    def local(self) -> LocalTransport | None:
        """The modules this client reaches in process, if any."""
        return self._local

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._policy

    def budget(self, module: str) -> RetryBudget:
        """The retry budget of ``module`` (created on first use)."""
        budget = self._budgets.get(module)
        if budget is None:
            budget = self._budgets[module] = self._policy.budget(self._clock)
        return budget

    async def __aenter__(self) -> ModuleClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        """Close the pool; calls in flight get ``grace`` seconds (None: cancelled). Safe twice."""
        await self._pool.close(grace)

    async def call_raw(
        self,
        module: str,
        method_path: str,
        payload: bytes,
        *,
        metadata: Sequence[tuple[str, str | bytes]] = (),
        deadline: Deadline | None = None,
        idempotent: bool = False,
    ) -> tuple[bytes, ResponseMetadata]:
        """Call ``method_path`` on an instance of ``module`` with ``payload`` as the request bytes.

        Returns the response bytes and the response's initial and trailing metadata. The
        deadline becomes ``timeout=`` only as each attempt starts, so a retry gets what is left
        of it, never a fresh allowance. Cancelling the calling task cancels the RPC in flight.

        Raises :class:`~runtime.errors.Unavailable` naming the module when it has no instance,
        :class:`~runtime.errors.DeadlineExceeded` when the deadline has passed, and the runtime
        error for any other status the call ends with.
        """
        local = self._local.lookup(module) if self._local is not None else None
        if local is None and not self._pool.addresses(module):
            raise Unavailable(f"no instance of module {module!r} is known")
        budget = self.budget(module)
        budget.deposit()
        wire_metadata = tuple(metadata) or None
        attempt = self._attempt if local is None else self._attempt_local
        # The first attempt runs bare: building a retry controller for every call costs more
        # than most calls, and most calls succeed.
        try:
            return await attempt(module, method_path, payload, wire_metadata, deadline)
        except Exception as exc:
            if not (idempotent and self._policy.max_attempts > 1 and is_retryable(exc)):
                raise
            first_failure = exc
        # Replay that first failure into the controller, so stop, backoff and budget see exactly
        # the attempts they would have seen had the controller run from the start.
        replay: list[Exception] = [first_failure]

        async def retried(*args: Any) -> tuple[bytes, ResponseMetadata]:
            if replay:
                raise replay.pop()
            return await attempt(*args)

        retrying = self._policy.retrying(deadline=deadline, budget=budget, sleep=self._sleep)
        result: tuple[bytes, ResponseMetadata] = await retrying(
            retried, module, method_path, payload, wire_metadata, deadline
        )
        return result

    @staticmethod
    def _timeout(module: str, method_path: str, deadline: Deadline | None) -> float | None:
        if deadline is None:
            return None
        timeout = deadline.timeout()
        if timeout <= 0:
            raise DeadlineExceeded(f"the deadline passed before {method_path} could be sent to {module!r}")
        return timeout

    async def _attempt(
        self,
        module: str,
        method_path: str,
        payload: bytes,
        metadata: tuple[tuple[str, str | bytes], ...] | None,
        deadline: Deadline | None,
    ) -> tuple[bytes, ResponseMetadata]:
        address, unary, lane = self._pool.route(module, method_path)
        if lane is not None:  # the worker's lane: the same call, without HTTP/2
            try:
                return await self._serve(lane, module, method_path, payload, metadata, deadline)
            except Unavailable as exc:
                # Only the lane's own failures retire it (a worker restarted: a new lane?); an
                # UNAVAILABLE the handler answered says nothing about the lane.
                cause = exc.__cause__
                if not isinstance(cause, (Unreached, Disconnected)):
                    raise
                self._pool.lane_failed(address, lane, unreached=isinstance(cause, Unreached))
                if isinstance(cause, Disconnected):
                    raise
                # Nothing was sent: the same call goes over gRPC, whatever its idempotency.
        timeout = self._timeout(module, method_path, deadline)
        tracing = self._tracing
        if tracing is None:
            call = unary(payload, timeout=timeout, metadata=metadata)
            try:
                response: bytes = await call
                initial = await call.initial_metadata()
                trailing = await call.trailing_metadata()
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc_error(exc, target=(module, method_path)) from exc
            return response, (*(initial or ()), *(trailing or ()))
        span, metadata = tracing.start(method_path, metadata)
        try:
            call = unary(payload, timeout=timeout, metadata=metadata)
            try:
                response = await call
                initial = await call.initial_metadata()
                trailing = await call.trailing_metadata()
            except asyncio.CancelledError:
                call.cancel()  # the caller gave up: so does the RPC, and the server sees it
                raise
        except grpc.aio.AioRpcError as exc:
            tracing.finish(span, exc.code(), exc.details())
            raise error_from_rpc_error(exc, target=(module, method_path)) from exc
        except BaseException as exc:
            tracing.fail(span, exc)
            raise
        tracing.finish(span, grpc.StatusCode.OK, None)
        return response, (*(initial or ()), *(trailing or ()))

    async def _attempt_local(
        self,
        module: str,
        method_path: str,
        payload: bytes,
        metadata: tuple[tuple[str, str | bytes], ...] | None,
        deadline: Deadline | None,
    ) -> tuple[bytes, ResponseMetadata]:
        assert self._local is not None
        serve = self._local.lookup(module)
        if serve is None:  # unregistered since the call started: it is gone, as a stopped worker
            raise Unavailable(f"module {module!r} is no longer served in this process")
        return await self._serve(serve, module, method_path, payload, metadata, deadline)

    async def _serve(
        self,
        serve: LocalCall,
        module: str,
        method_path: str,
        payload: bytes,
        metadata: tuple[tuple[str, str | bytes], ...] | None,
        deadline: Deadline | None,
    ) -> tuple[bytes, ResponseMetadata]:
        """One attempt through a :data:`LocalCall`: in process, or a worker's lane."""
        self._timeout(module, method_path, deadline)
        tracing = self._tracing
        if tracing is None:
            try:
                return await serve(method_path, payload, metadata or (), deadline)
            except LocalAbort as exc:
                raise error_from_local_abort(exc) from exc
        span, metadata = tracing.start(method_path, metadata)
        try:
            result = await serve(method_path, payload, metadata, deadline)
        except LocalAbort as exc:
            tracing.finish(span, exc.code, exc.details)
            raise error_from_local_abort(exc) from exc
        except BaseException as exc:
            tracing.fail(span, exc)
            raise
        tracing.finish(span, grpc.StatusCode.OK, None)
        return result
