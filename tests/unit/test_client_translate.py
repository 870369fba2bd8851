"""gRPC status -> runtime error: the inverse of the one table in runtime.errors."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from runtime.client import ERROR_OF, error_from_rpc_error, error_from_status
from runtime.errors import STATUS_OF, InternalError, ResourceExhausted, status_of


@pytest.mark.parametrize("cls", sorted(STATUS_OF, key=lambda c: c.__name__))
def test_every_runtime_error_survives_the_round_trip_through_its_status(cls: type) -> None:
    error = error_from_status(STATUS_OF[cls], "details from the worker")
    assert type(error) is cls
    assert error.message == "details from the worker"
    assert status_of(error) == STATUS_OF[cls]


def test_the_inverse_table_covers_every_status_the_runtime_sends() -> None:
    assert set(ERROR_OF) == set(STATUS_OF.values())


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DATA_LOSS],
)
def test_a_status_the_runtime_never_sends_is_internal_and_named(code: grpc.StatusCode) -> None:
    error = error_from_status(code, "odd peer")
    assert type(error) is InternalError
    assert code.name in error.message
    assert "odd peer" in error.message


def test_empty_details_fall_back_to_the_code_name() -> None:
    assert error_from_status(grpc.StatusCode.UNAVAILABLE, "").message == "UNAVAILABLE"


def _rpc_error(code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str | bytes], ...]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


def test_retry_info_in_the_rich_status_becomes_retry_after() -> None:
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="rate limited")
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=250_000_000)))
    error = error_from_rpc_error(
        _rpc_error(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "rate limited",
            (("grpc-status-details-bin", status.SerializeToString()),),
        )
    )
    assert isinstance(error, ResourceExhausted)
    assert error.retry_after == pytest.approx(1.25)
    assert error.message == "rate limited"


def test_malformed_status_details_do_not_hide_the_error() -> None:
    error = error_from_rpc_error(
        _rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", (("grpc-status-details-bin", b"\xff\xff\xff"),))
    )
    assert isinstance(error, ResourceExhausted)
    assert error.retry_after is None
