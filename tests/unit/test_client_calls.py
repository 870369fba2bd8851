"""ModuleClient over a real socket: retries, deadlines, cancellation, ejection and errors.

Each test runs real grpc.aio servers on 127.0.0.1 port 0 with raw-bytes generic handlers that
answer like a modrpc worker (``x-request-id`` in the trailers of every answer, failures
included). Backoff never sleeps here: the client gets a ``sleep`` that records the delay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from runtime.client import InstancePool, ModuleClient, Outliers, RetryPolicy
from runtime.deadline import Deadline
from runtime.errors import DeadlineExceeded, NotFound, ResourceExhausted, Unavailable
from runtime.observability import ClientTracer

RID = (("x-request-id", "r-test"),)
"""What a modrpc worker returns with every answer; a status without it is grpc's own."""


class Worker:
    """A real server whose ``Echo`` can fail with UNAVAILABLE a given number of times."""

    def __init__(self, fail_times: int = 0, *, hangs: bool = False) -> None:
        self.fail_times = fail_times
        self.hangs = hangs
        """``EchoOrHang`` hangs on this worker instead of answering."""
        self.calls = 0
        self.seen_remaining: list[float | None] = []
        self.seen_metadata: list[dict[str, str | bytes]] = []
        self.hang_started = asyncio.Event()
        self.hang_cancelled = asyncio.Event()
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _echo(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        self.calls += 1
        self.seen_remaining.append(context.time_remaining())
        self.seen_metadata.append(dict(context.invocation_metadata() or ()))
        if self.fail_times > 0:
            self.fail_times -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up", trailing_metadata=RID)
        context.set_trailing_metadata((("x-served-by", self.address), ("x-cost", "1"), *RID))
        return b"echo:" + request

    async def _hang(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        self.calls += 1
        self.hang_started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.hang_cancelled.set()
            raise
        return b""

    async def _echo_or_hang(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        if self.hangs:
            return await self._hang(request, context)
        return await self._echo(request, context)

    async def _missing(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        await context.abort(grpc.StatusCode.NOT_FOUND, "user 42 not found", trailing_metadata=RID)
        return b""

    async def _limited(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        self.calls += 1
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000))
        status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="slow down")
        status.details.add().Pack(info)
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "slow down",
            trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()), *RID),
        )
        return b""

    async def start(self) -> Worker:
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self._echo),
            "Hang": grpc.unary_unary_rpc_method_handler(self._hang),
            "EchoOrHang": grpc.unary_unary_rpc_method_handler(self._echo_or_hang),
            "Missing": grpc.unary_unary_rpc_method_handler(self._missing),
            "Limited": grpc.unary_unary_rpc_method_handler(self._limited),
        }
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Worker", handlers),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)


class RecordingSleep:
    """Stands in for asyncio.sleep in the retry loop: records the delay, does not wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    w = await Worker().start()
    yield w
    await w.stop()


@pytest.fixture
async def second_worker() -> AsyncIterator[Worker]:
    w = await Worker().start()
    yield w
    await w.stop()


def make_client(*addresses: str, sleep: RecordingSleep | None = None, **policy: float) -> ModuleClient:
    pool = InstancePool()
    pool.update("users", list(addresses))
    return ModuleClient(pool, retry=RetryPolicy(**policy), sleep=sleep or RecordingSleep(), tracing=ClientTracer())  # type: ignore[arg-type]


ECHO = "/test.Worker/Echo"


async def test_idempotent_call_is_retried_on_unavailable_and_succeeds(worker: Worker) -> None:
    worker.fail_times = 2
    sleep = RecordingSleep()
    async with make_client(worker.address, sleep=sleep, max_attempts=3) as client:
        body, _ = await client.call("users", ECHO, b"hi", idempotent=True)
    assert body == b"echo:hi"
    assert worker.calls == 3
    assert len(sleep.delays) == 2


async def test_non_idempotent_call_fails_at_once_with_unavailable(worker: Worker) -> None:
    worker.fail_times = 1
    sleep = RecordingSleep()
    async with make_client(worker.address, sleep=sleep, max_attempts=5) as client:
        with pytest.raises(Unavailable, match="warming up") as caught:
            await client.call("users", ECHO, b"hi")
    assert worker.calls == 1
    assert sleep.delays == []
    assert caught.value.relayed is not None  # the worker's own status, for a gateway to relay


async def test_retries_stop_after_max_attempts_and_raise_the_last_error(worker: Worker) -> None:
    worker.fail_times = 10
    async with make_client(worker.address, max_attempts=4) as client:
        with pytest.raises(Unavailable, match="warming up"):
            await client.call("users", ECHO, b"hi", idempotent=True)
    assert worker.calls == 4


async def test_an_empty_retry_budget_turns_retries_off(worker: Worker) -> None:
    worker.fail_times = 1
    async with make_client(worker.address, max_attempts=3, budget_ratio=0.0, budget_min_per_second=0.0) as client:
        with pytest.raises(Unavailable):
            await client.call("users", ECHO, b"hi", idempotent=True)
    assert worker.calls == 1


async def test_a_retry_goes_to_another_instance(worker: Worker, second_worker: Worker) -> None:
    worker.fail_times = 1
    second_worker.fail_times = 0
    async with make_client(worker.address, second_worker.address, max_attempts=2) as client:
        body, metadata = await client.call("users", ECHO, b"x", idempotent=True)
    assert body == b"echo:x"
    assert (worker.calls, second_worker.calls) == (1, 1)
    assert ("x-served-by", second_worker.address) in metadata


async def test_deadline_exceeded_is_not_retried_even_when_idempotent(worker: Worker) -> None:
    async with make_client(worker.address, max_attempts=3) as client:
        with pytest.raises(DeadlineExceeded):
            await client.call("users", "/test.Worker/Hang", b"", deadline=Deadline.after(0.2), idempotent=True)
    assert worker.calls == 1


async def test_the_server_sees_the_deadline_shortened_by_time_already_spent(worker: Worker) -> None:
    clock = FakeClock()
    deadline = Deadline.after(2.0, clock)
    clock.now += 1.5  # the caller has already spent 1.5 s of its 2 s
    async with make_client(worker.address) as client:
        await client.call("users", ECHO, b"", deadline=deadline)
    remaining = worker.seen_remaining[0]
    assert remaining is not None
    # 0.5 s were left when the call was made. gRPC sends the timeout rounded up to its wire
    # units, so the server may see a hair more than 0.5 s; the point is it is nowhere near 2 s.
    assert 0.3 < remaining < 0.75


async def test_a_passed_deadline_fails_without_calling(worker: Worker) -> None:
    clock = FakeClock()
    deadline = Deadline.after(1.0, clock)
    clock.now += 1.0
    async with make_client(worker.address) as client:
        with pytest.raises(DeadlineExceeded):
            await client.call("users", ECHO, b"", deadline=deadline, idempotent=True)
    assert worker.calls == 0


@pytest.mark.parametrize("traced", [True, False], ids=["traced", "bare"])
async def test_cancelling_the_caller_cancels_the_call_on_the_server(worker: Worker, traced: bool) -> None:
    pool = InstancePool()
    pool.update("users", [worker.address])
    async with ModuleClient(pool, tracing=ClientTracer() if traced else None) as client:
        task = asyncio.create_task(client.call("users", "/test.Worker/Hang", b""))
        await asyncio.wait_for(worker.hang_started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(worker.hang_cancelled.wait(), 5)
    assert worker.hang_cancelled.is_set()


async def test_an_ejected_instance_gets_no_calls_while_another_exists(
    worker: Worker, second_worker: Worker
) -> None:
    now = [0.0]
    pool = InstancePool(outliers=Outliers(eject_seconds=5.0, clock=lambda: now[0]))
    pool.update("users", [worker.address, second_worker.address])
    async with ModuleClient(pool) as client:
        pool.outliers.failed(worker.address)
        for _ in range(6):
            await client.call("users", ECHO, b"")
        assert (worker.calls, second_worker.calls) == (0, 6)
        now[0] = 5.0  # the ejection is over
        for _ in range(4):
            await client.call("users", ECHO, b"")
    assert (worker.calls, second_worker.calls) == (2, 8)


async def test_a_refused_instance_is_ejected_and_the_call_goes_to_another_whatever_its_idempotency(
    worker: Worker,
) -> None:
    dead = await Worker().start()
    await dead.stop()  # its port now refuses connections: nothing can be sent there
    async with make_client(dead.address, worker.address, max_attempts=3) as client:
        for _ in range(4):
            body, _ = await client.call("users", ECHO, b"x")  # not idempotent
            assert body == b"echo:x"
        assert dead.address in client.pool.outliers.ejected()
    assert worker.calls == 4


async def test_an_unknown_module_is_unavailable_and_named_once_the_deadline_is_spent_waiting(worker: Worker) -> None:
    async with make_client(worker.address) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="no instance of billing is known"):
            await client.call("billing", ECHO, b"", deadline=Deadline.after(0.3))
        assert time.monotonic() - started >= 0.25, "it waited for an instance within its deadline"


async def test_a_call_to_a_module_without_instances_waits_for_one_within_its_deadline(worker: Worker) -> None:
    async with make_client() as client:
        client.pool.update("users", [])
        call = asyncio.create_task(client.call("users", ECHO, b"x", deadline=Deadline.after(5.0)))
        await asyncio.sleep(0.2)
        assert not call.done(), "no instance yet: the call waits instead of failing"
        client.pool.update("users", [worker.address])  # a worker (re)started meanwhile
        body, _ = await asyncio.wait_for(call, 5)
    assert body == b"echo:x"


async def test_with_every_instance_ejected_a_call_waits_for_a_new_one_before_panic_routing(
    worker: Worker, second_worker: Worker
) -> None:
    async with make_client(worker.address) as client:
        client.pool.outliers.failed(worker.address)
        call = asyncio.create_task(client.call("users", ECHO, b"x", deadline=Deadline.after(5.0)))
        await asyncio.sleep(0.2)
        assert not call.done()
        client.pool.update("users", [worker.address, second_worker.address])
        _, metadata = await asyncio.wait_for(call, 5)
    assert ("x-served-by", second_worker.address) in metadata
    assert worker.calls == 0


async def test_with_every_instance_ejected_a_call_panic_routes_after_half_its_deadline(worker: Worker) -> None:
    async with make_client(worker.address) as client:
        client.pool.outliers.failed(worker.address)
        started = time.monotonic()
        body, _ = await client.call("users", ECHO, b"x", deadline=Deadline.after(0.6))
        waited = time.monotonic() - started
    assert body == b"echo:x", "the ejected instance had recovered: trying it beat failing"
    assert 0.25 <= waited < 0.6


async def test_an_attempt_past_its_per_try_timeout_is_retried_on_another_instance(
    worker: Worker, second_worker: Worker
) -> None:
    worker.hangs = True
    async with make_client(worker.address, second_worker.address, max_attempts=3, per_try_timeout=0.2) as client:
        started = time.monotonic()
        _, metadata = await client.call(
            "users", "/test.Worker/EchoOrHang", b"x", deadline=Deadline.after(2.0), idempotent=True
        )
        assert time.monotonic() - started < 1.0
        assert ("x-served-by", second_worker.address) in metadata
        await asyncio.wait_for(worker.hang_cancelled.wait(), 5)  # the abandoned attempt is cancelled
        # Three hangs in a row eject it: later calls go straight to the other.
        for _ in range(4):
            await client.call("users", "/test.Worker/EchoOrHang", b"x", deadline=Deadline.after(2.0), idempotent=True)
        assert worker.address in client.pool.outliers.ejected()
    assert worker.calls == 3


async def test_a_per_try_timeout_is_not_applied_to_calls_that_are_not_idempotent(worker: Worker) -> None:
    async with make_client(worker.address, max_attempts=3, per_try_timeout=0.05) as client:
        with pytest.raises(DeadlineExceeded):
            await client.call("users", "/test.Worker/Hang", b"", deadline=Deadline.after(0.3))
    assert worker.calls == 1


async def test_payload_and_response_are_raw_bytes_and_response_metadata_is_returned(worker: Worker) -> None:
    payload = bytes(range(256))  # not UTF-8, not a valid protobuf message: nothing may decode it
    async with make_client(worker.address) as client:
        body, metadata = await client.call("users", ECHO, payload, metadata=[("x-request-id", "r-1")])
    assert body == b"echo:" + payload
    assert ("x-served-by", worker.address) in metadata
    assert ("x-cost", "1") in metadata
    assert worker.seen_metadata[0]["x-request-id"] == "r-1"


async def test_a_status_from_the_worker_becomes_the_runtime_error_with_its_details(worker: Worker) -> None:
    async with make_client(worker.address) as client:
        with pytest.raises(NotFound) as caught:
            await client.call("users", "/test.Worker/Missing", b"")
    assert caught.value.message == "user 42 not found"


async def test_retry_info_from_the_worker_becomes_retry_after(worker: Worker) -> None:
    async with make_client(worker.address, max_attempts=3) as client:
        with pytest.raises(ResourceExhausted) as caught:
            await client.call("users", "/test.Worker/Limited", b"", idempotent=True)
    assert caught.value.retry_after == pytest.approx(2.5)
    assert worker.calls == 1  # RESOURCE_EXHAUSTED is not retried


async def test_an_oversized_request_is_refused_by_the_configured_message_limit(worker: Worker) -> None:
    pool = InstancePool(max_message_bytes=1024)
    pool.update("users", [worker.address])
    async with ModuleClient(pool) as client:
        with pytest.raises(ResourceExhausted):
            await client.call("users", ECHO, b"x" * 4096)
        body, _ = await client.call("users", ECHO, b"x" * 100)
    assert body == b"echo:" + b"x" * 100
    assert worker.calls == 1


async def test_a_closed_client_refuses_calls(worker: Worker) -> None:
    client = make_client(worker.address)
    await client.call("users", ECHO, b"")
    await client.close()
    await client.close()
    with pytest.raises(Unavailable):
        await client.call("users", ECHO, b"")


async def test_deadlines_too_short_to_be_answered_in_do_not_eject_an_instance(worker: Worker) -> None:
    """A caller's own short deadline (or a request that took its method's time to arrive) says
    nothing of the instance: only attempts that had HANG_EVIDENCE seconds count as hangs."""
    async with make_client(worker.address, max_attempts=1) as client:
        for _ in range(5):
            with pytest.raises(DeadlineExceeded):
                await client.call("users", "/test.Worker/Hang", b"", deadline=Deadline.after(0.05))
        assert worker.address not in client.pool.outliers.ejected()
        for _ in range(3):
            with pytest.raises(DeadlineExceeded):
                await client.call("users", "/test.Worker/Hang", b"", deadline=Deadline.after(0.3))
        assert worker.address in client.pool.outliers.ejected(), "three real hangs in a row eject it"
