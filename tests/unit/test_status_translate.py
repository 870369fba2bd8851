"""gRPC status <-> runtime error: the inverse of the one table in runtime.errors, and the one
translation of a failed grpc.aio call into the call contract's error."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from runtime.errors import STATUS_OF, InternalError, NotFound, ResourceExhausted, status_of
from runtime.status import ERROR_OF, RpcStatus, error_of, rpc_status_of
from runtime.transport import CallError, Disconnected, TransportError, Unreached, call_error


def error_from_status(code: grpc.StatusCode, details: str) -> object:
    return error_of(RpcStatus(code, details))


def error_from_rpc_error(exc: grpc.aio.AioRpcError) -> object:
    return error_of(call_error(exc).status)


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


RID = (("x-request-id", "r-1"),)


def test_a_status_a_server_sent_stays_the_peers_answer() -> None:
    failed = call_error(_rpc_error(grpc.StatusCode.UNAVAILABLE, "database down", RID))
    assert type(failed) is CallError
    assert failed.details == "database down"


def test_grpcs_own_connection_failure_is_unreached() -> None:
    failed = call_error(
        _rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; ipv4:10.0.3.7:50061", ())
    )
    assert isinstance(failed, Unreached)


def test_grpcs_own_unavailable_mid_call_is_disconnected_and_its_deadline_a_transport_error() -> None:
    assert isinstance(call_error(_rpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed", ())), Disconnected)
    timed_out = call_error(_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", ()))
    assert isinstance(timed_out, TransportError) and timed_out.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_relayed_status_goes_back_as_it_came_only_when_asked() -> None:
    status = status_pb2.Status(code=code_pb2.NOT_FOUND, message="no user 42")
    status.details.add().Pack(error_details_pb2.BadRequest())
    trailing = (("grpc-status-details-bin", status.SerializeToString()), ("x-request-id", "worker-rid"))
    error = error_of(RpcStatus(grpc.StatusCode.NOT_FOUND, "no user 42", trailing))
    assert isinstance(error, NotFound)
    relayed = rpc_status_of(error, "gateway-rid", relay=True)
    assert dict(relayed.trailing_metadata)["grpc-status-details-bin"] == status.SerializeToString()
    assert dict(relayed.trailing_metadata)["x-request-id"] == "gateway-rid"
    own = rpc_status_of(error, "handler-rid")
    assert own.details == "no user 42"
    assert dict(own.trailing_metadata)["x-request-id"] == "handler-rid"
    rich = status_pb2.Status.FromString(dict(own.trailing_metadata)["grpc-status-details-bin"])
    assert list(rich.details) == []  # the other module's details are not this server's answer


def test_a_cancelled_the_server_made_up_is_disconnected_not_passed_on() -> None:
    """A worker shutting down cancels calls it had not started: the caller cancelled nothing, so
    it must not read CANCELLED; the call may have run, so it is retried only if idempotent."""
    failed = call_error(_rpc_error(grpc.StatusCode.CANCELLED, "CANCELLED", ()))
    assert isinstance(failed, Disconnected) and failed.code == grpc.StatusCode.UNAVAILABLE
    sent = call_error(_rpc_error(grpc.StatusCode.CANCELLED, "the caller cancelled the call", RID))
    assert type(sent) is CallError and sent.code == grpc.StatusCode.CANCELLED  # a modrpc server's own
