"""ModuleClient over the in-process transport: same bytes, errors, retries and deadlines as gRPC."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from runtime.client import InstancePool, ModuleClient, RetryPolicy
from runtime.deadline import Deadline
from runtime.errors import DeadlineExceeded, NotFound, ResourceExhausted, Unavailable
from runtime.transport import CallError, InProcessModules

PATH = "/echo.v1.EchoService/Echo"


class Status(grpc.Status):
    def __init__(
        self, code: grpc.StatusCode, details: str, trailing: Sequence[tuple[str, str | bytes]] = ()
    ) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = tuple(trailing)


class Endpoint:
    """An in-process endpoint that records its calls and fails the first ``fail`` of them."""

    def __init__(self, *, fail: int = 0, status: grpc.Status | None = None) -> None:
        self.fail = fail
        self.status = status or Status(grpc.StatusCode.UNAVAILABLE, "warming up")
        self.calls: list[tuple[str, bytes, dict[str, str | bytes], Deadline | None]] = []

    async def unary(
        self, method_path: str, payload: bytes, metadata: Sequence[tuple[str, str | bytes]], deadline: Deadline | None
    ) -> tuple[bytes, tuple[tuple[str, str | bytes], ...]]:
        self.calls.append((method_path, payload, dict(metadata), deadline))
        if self.fail > 0:
            self.fail -= 1
            raise CallError(self.status)
        return b"echo:" + payload, (("x-request-id", "r-1"),)


class NoSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def client_for(endpoint: Endpoint, *, sleep: NoSleep | None = None, attempts: int = 3) -> ModuleClient:
    transport = InProcessModules()
    transport.register("echo", endpoint)
    return ModuleClient(InstancePool(local=transport), retry=RetryPolicy(max_attempts=attempts), sleep=sleep or NoSleep())


async def test_a_module_registered_locally_is_called_in_process_with_bytes_metadata_and_deadline() -> None:
    endpoint = Endpoint()
    deadline = Deadline.after(5.0)
    async with client_for(endpoint) as client:
        body, metadata = await client.call(
            "echo", PATH, b"hi", metadata=[("x-request-id", "r-1")], deadline=deadline
        )
    assert body == b"echo:hi"
    assert metadata == (("x-request-id", "r-1"),)
    assert endpoint.calls == [(PATH, b"hi", {"x-request-id": "r-1"}, deadline)]


async def test_an_aborted_local_call_raises_the_runtime_error_of_its_status_with_the_status_as_cause() -> None:
    endpoint = Endpoint(fail=1, status=Status(grpc.StatusCode.NOT_FOUND, "no user 42"))
    async with client_for(endpoint) as client:
        with pytest.raises(NotFound, match="no user 42") as caught:
            await client.call("echo", PATH, b"", idempotent=True)
    assert isinstance(caught.value.__cause__, CallError)
    assert caught.value.__cause__.code == grpc.StatusCode.NOT_FOUND
    assert len(endpoint.calls) == 1, "NOT_FOUND is never retried"


async def test_resource_exhausted_from_a_local_endpoint_keeps_its_retry_delay() -> None:
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=250_000_000))
    rich = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="slow down")
    rich.details.add().Pack(info)
    status = Status(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", (("grpc-status-details-bin", rich.SerializeToString()),)
    )
    async with client_for(Endpoint(fail=1, status=status)) as client:
        with pytest.raises(ResourceExhausted) as caught:
            await client.call("echo", PATH, b"")
    assert caught.value.retry_after == pytest.approx(1.25)


async def test_an_idempotent_local_call_is_retried_on_unavailable_with_backoff() -> None:
    endpoint = Endpoint(fail=2)
    sleep = NoSleep()
    async with client_for(endpoint, sleep=sleep) as client:
        body, _ = await client.call("echo", PATH, b"x", idempotent=True)
    assert body == b"echo:x"
    assert len(endpoint.calls) == 3
    assert len(sleep.delays) == 2


async def test_a_non_idempotent_local_call_is_not_retried() -> None:
    endpoint = Endpoint(fail=1)
    async with client_for(endpoint) as client:
        with pytest.raises(Unavailable):
            await client.call("echo", PATH, b"x", idempotent=False)
    assert len(endpoint.calls) == 1


async def test_retries_stop_after_max_attempts_and_the_last_error_is_raised() -> None:
    endpoint = Endpoint(fail=5)
    async with client_for(endpoint, attempts=3) as client:
        with pytest.raises(Unavailable, match="warming up"):
            await client.call("echo", PATH, b"x", idempotent=True)
    assert len(endpoint.calls) == 3


async def test_a_passed_deadline_fails_before_the_local_endpoint_runs() -> None:
    endpoint = Endpoint()
    async with client_for(endpoint) as client:
        with pytest.raises(DeadlineExceeded):
            await client.call("echo", PATH, b"", deadline=Deadline.after(-1.0))
    assert endpoint.calls == []


async def test_an_unregistered_module_goes_back_to_the_network() -> None:
    transport = InProcessModules()
    transport.register("echo", Endpoint())
    transport.unregister("echo")
    transport.unregister("echo")  # safe twice
    async with ModuleClient(InstancePool(local=transport)) as client:
        with pytest.raises(Unavailable, match="no instance of echo is known"):
            await client.call("echo", PATH, b"", deadline=Deadline.after(0.1))
    assert transport.modules() == ()


async def test_a_pool_key_naming_a_version_reaches_the_local_module_only_when_it_serves_that_version() -> None:
    endpoint = Endpoint()
    transport = InProcessModules()
    transport.register("echo", endpoint, versions=["2025-06-01"])
    async with ModuleClient(InstancePool(local=transport)) as client:
        body, _ = await client.call("echo@2025-06-01", PATH, b"v")
        assert body == b"echo:v"
        with pytest.raises(Unavailable, match="no instance of echo 2025-01-15 is known"):
            await client.call("echo@2025-01-15", PATH, b"v", deadline=Deadline.after(0.1))
    transport.unregister("echo")
    assert transport.lookup("echo@2025-06-01") is None
