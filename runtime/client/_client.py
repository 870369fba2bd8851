"""The module client: one unary call to a module, as raw bytes, with deadline, retries and tracing.

    async with ModuleClient(ChannelPool(interceptors=client_interceptors())) as client:
        client.pool.update("users", ["127.0.0.1:50061", "127.0.0.1:50062"])
        body, metadata = await client.call_raw(
            "users", "/users.v1.Users/GetUser", request_bytes,
            metadata=[("x-request-id", rid)], deadline=Deadline.after(2.0), idempotent=True,
        )

Nothing is decoded: the gateway passes request bytes through when no transformer applies, and
typed clients serialise before and after. gRPC failures come back as :mod:`runtime.errors`
types (see :mod:`runtime.client._translate`), with the ``AioRpcError`` as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc
import grpc.aio

from runtime.client._pool import ChannelPool
from runtime.client._retry import RetryBudget, RetryPolicy, Sleep
from runtime.client._translate import error_from_rpc_error
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
    """

    def __init__(
        self,
        pool: ChannelPool,
        *,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self._pool = pool
        self._policy = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._budgets: dict[str, RetryBudget] = {}

    @property
    def pool(self) -> ChannelPool:
        return self._pool

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
        if not self._pool.addresses(module):
            raise Unavailable(f"no instance of module {module!r} is known")
        budget = self.budget(module)
        budget.deposit()
        wire_metadata = tuple(metadata) or None
        if not idempotent or self._policy.max_attempts == 1:
            return await self._attempt(module, method_path, payload, wire_metadata, deadline)
        retrying = self._policy.retrying(deadline=deadline, budget=budget, sleep=self._sleep)
        result: tuple[bytes, ResponseMetadata] = await retrying(
            self._attempt, module, method_path, payload, wire_metadata, deadline
        )
        return result

    async def _attempt(
        self,
        module: str,
        method_path: str,
        payload: bytes,
        metadata: tuple[tuple[str, str | bytes], ...] | None,
        deadline: Deadline | None,
    ) -> tuple[bytes, ResponseMetadata]:
        _address, unary = self._pool.unary_unary(module, method_path)
        timeout: float | None = None
        if deadline is not None:
            timeout = deadline.timeout()
            if timeout <= 0:
                raise DeadlineExceeded(f"the deadline passed before {method_path} could be sent to {module!r}")
        call = unary(payload, timeout=timeout, metadata=metadata)
        try:
            response: bytes = await call
            initial = await call.initial_metadata()
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc_error(exc) from exc
        return response, (*(initial or ()), *(trailing or ()))
