"""The module client: one unary call to a module, as raw bytes, with deadline, retries and tracing.

    async with ModuleClient(InstancePool()) as client:
        client.pool.update("users", ["127.0.0.1:50061", "127.0.0.1:50062"])
        body, trailers = await client.call(
            "users", "/users.v1.UsersService/GetUser", request_bytes,
            metadata=[("x-request-id", rid)], deadline=Deadline.after(2.0), idempotent=True,
        )

Nothing is decoded: the gateway passes request bytes through when no transformer applies, and
typed clients serialise before and after. Each attempt goes through whatever
:class:`~runtime.transport.Transport` the pool picks (a worker's lane or gRPC, or the module's
endpoints in this process), the same way. A failed call ends as the runtime error of its status
(:func:`runtime.status.error_of`): a peer's own status is kept on the error for a gateway to
relay, while a transport's failure is logged and reported naming the module, never the
addresses it tried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Sequence
from typing import Any

import grpc
from opentelemetry import trace

from runtime.client._pool import InstancePool
from runtime.client._retry import AttemptTimedOut, RetryBudget, RetryPolicy, Sleep, is_retryable
from runtime.client._stream import ModuleStream
from runtime.deadline import Clock, Deadline
from runtime.errors import DeadlineExceeded, ModrpcError
from runtime.observability import ClientTracer
from runtime.status import RpcStatus, error_of
from runtime.transport import CallError, Metadata, Reply, TransportError

__all__ = ["ModuleClient"]

log = logging.getLogger("modrpc.client")

HANG_EVIDENCE = 0.25
"""Seconds an attempt bounded only by its caller's deadline must have had for a missed deadline
to count against its instance (``consecutive_deadlines`` of them eject it)."""


class ModuleClient:
    """Calls modules through an :class:`InstancePool`, which it owns and closes.

    Each module gets its own :class:`RetryBudget`, so one failing module cannot spend the
    retries of the others. ``sleep`` and ``clock`` are for tests: backoff without waiting, a
    budget on a clock they control. ``retry`` is the policy of calls that bring none of their
    own. ``tracing`` opens a client span around each attempt.
    """

    def __init__(
        self,
        pool: InstancePool,
        *,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        tracing: ClientTracer | None = None,
    ) -> None:
        self._pool = pool
        self._policy = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._tracing = tracing
        self._budgets: dict[str, RetryBudget] = {}

    @property
    def pool(self) -> InstancePool:
        return self._pool

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._policy

    def budget(self, key: str) -> RetryBudget:
        """The retry budget of module ``key`` (created on first use)."""
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = self._policy.budget(self._clock)
        return budget

    async def __aenter__(self) -> ModuleClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        """Close the pool; calls in flight get ``grace`` seconds (None: cancelled). Safe twice."""
        await self._pool.close(grace)

    async def call(
        self,
        key: str,
        method: str,
        payload: bytes,
        *,
        metadata: Sequence[tuple[str, str | bytes]] = (),
        deadline: Deadline | None = None,
        idempotent: bool = False,
        retry: RetryPolicy | None = None,
    ) -> Reply:
        """Call ``method`` on an instance of module ``key`` with ``payload`` as the request bytes.

        Returns the response bytes and the response's trailing metadata. Every attempt gets what
        is left of ``deadline``, never a fresh allowance, or less: for an idempotent call, the
        policy's ``per_try_timeout``. A call that reached no instance is tried again elsewhere
        whatever its idempotency; an idempotent one also after UNAVAILABLE or an attempt that
        timed out, by ``retry`` (default: the client's policy) and within the module's budget.
        A call that finds no instance waits for one within its deadline
        (:meth:`InstancePool.acquire`). Cancelling the calling task cancels the call in flight.

        Raises :class:`~runtime.errors.Unavailable` naming the module when it has no instance,
        :class:`~runtime.errors.DeadlineExceeded` when the deadline has passed, and the runtime
        error of any other status the call ends with.
        """
        budget = self.budget(key)
        budget.deposit()
        pairs: Metadata = tuple(metadata)
        policy = retry or self._policy
        per_try = policy.per_try_timeout if idempotent else None
        # The first attempt runs bare: building a retry controller for every call costs more
        # than most calls, and most calls succeed.
        tried: list[str] = []  # the instances this call's attempts went to: retries avoid them
        try:
            return await self._attempt(key, method, payload, pairs, deadline, per_try, tried)
        except CallError as exc:
            if policy.max_attempts < 2 or not is_retryable(exc, idempotent=idempotent):
                raise self._error(exc, key, method) from exc
            first_failure: CallError = exc
        # Replay that first failure into the controller, so stop, backoff and budget see exactly
        # the attempts they would have seen had the controller run from the start.
        replay: list[Exception] = [first_failure]

        async def attempt(*args: Any) -> Reply:
            if replay:
                raise replay.pop()
            return await self._attempt(*args)

        retrying = policy.retrying(deadline=deadline, budget=budget, idempotent=idempotent, sleep=self._sleep)
        try:
            reply: Reply = await retrying(attempt, key, method, payload, pairs, deadline, per_try, tried)
        except CallError as exc:
            raise self._error(exc, key, method) from exc
        return reply

    def stream(
        self,
        key: str,
        method: str,
        requests: AsyncIterable[bytes],
        *,
        metadata: Sequence[tuple[str, str | bytes]] = (),
        deadline: Deadline | None = None,
        idempotent: bool = False,
        retry: RetryPolicy | None = None,
    ) -> ModuleStream:
        """Start a streaming call (any shape) to ``method`` on an instance of module ``key``.

        The response messages are read from the returned :class:`ModuleStream`; the call is
        opened on the first read. It is retried like :meth:`call`, but only until its first
        response message arrives and while the request messages sent so far can be sent again.
        Failures are the runtime errors :meth:`call` raises; ``aclose()`` cancels the call.
        """
        return ModuleStream(
            self, key, method, requests, metadata=tuple(metadata), deadline=deadline,
            idempotent=idempotent, policy=retry or self._policy,
        )  # fmt: skip

    async def _attempt(
        self,
        key: str,
        method: str,
        payload: bytes,
        metadata: Metadata,
        deadline: Deadline | None,
        per_try: float | None = None,
        tried: list[str] | None = None,
    ) -> Reply:
        if deadline is not None and deadline.expired():
            raise DeadlineExceeded(f"the deadline passed before {method} could be sent to {key.replace('@', ' ')}")
        pool = self._pool
        avoid = tried or ()
        address, transport = pool.pick_healthy(key, avoid) or await pool.acquire(key, deadline, avoid)
        if tried is not None:
            tried.append(address)
        attempt_deadline = deadline
        if per_try is not None:
            attempt_deadline = Deadline.earliest(deadline, Deadline.after(per_try, self._clock))
        outliers = pool.outliers
        # A deadline missed says the instance hangs only if the attempt had time to be answered:
        # its own per-try timeout, or at least HANG_EVIDENCE seconds. A caller's short deadline
        # (or a request that took its method's time to arrive) must not eject healthy workers.
        judged = (
            attempt_deadline is None
            or attempt_deadline is not deadline
            or attempt_deadline.remaining() >= HANG_EVIDENCE
        )
        tracing = self._tracing
        span: trace.Span | None = None
        if tracing is not None:
            span, metadata = tracing.start(method, metadata)
        try:
            reply = await transport.unary(method, payload, metadata, attempt_deadline)
        except CallError as exc:
            if judged or exc.code != grpc.StatusCode.DEADLINE_EXCEEDED:
                outliers.observe(address, exc)
            if tracing is not None and span is not None:
                tracing.finish(span, exc.code, exc.details)
            if (
                exc.code == grpc.StatusCode.DEADLINE_EXCEEDED
                and attempt_deadline is not deadline
                and (deadline is None or not deadline.expired())
            ):
                raise AttemptTimedOut(
                    f"{method} to {key.replace('@', ' ')} ({address}) took longer than its "
                    f"per_try_timeout of {per_try:g}s: {exc.details}"
                ) from exc
            raise
        except BaseException as exc:
            if tracing is not None and span is not None:
                tracing.fail(span, exc)
            raise
        outliers.succeeded(address)
        if tracing is not None and span is not None:
            tracing.finish(span, grpc.StatusCode.OK, None)
        return reply

    @staticmethod
    def _error(exc: CallError, key: str, method: str) -> ModrpcError:
        """The runtime error a failed call ends as.

        A peer's status is the error as it came (kept for relaying). A transport's own failure
        names internal addresses: its text goes to the log, and the caller reads which module
        could not be reached instead.
        """
        if not isinstance(exc, TransportError):
            return error_of(exc.status)
        target = key.replace("@", " ")
        # A deadline is the caller's to set: one missed is no news of the instance (the pool
        # logs an ejection); a broken connection is.
        level = logging.DEBUG if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED else logging.WARNING
        log.log(level, "%s to %s failed in transport: %s", method, target, exc.details)
        if exc.code == grpc.StatusCode.UNAVAILABLE:
            message = f"no instance of {target} could be reached for {method}"
        elif exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"deadline exceeded before {target} answered {method}"
        else:
            message = f"{method} to {target} failed: {exc.code.name}"
        return error_of(RpcStatus(exc.code, message), relay=False)
