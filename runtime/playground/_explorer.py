"""The API explorer's backend: a JSON request sent through the real gateway over gRPC.

A browser cannot speak gRPC, so the page posts JSON here; it is encoded to protobuf with the
descriptors of the version picked (the same :class:`~runtime.wire.WireVersion` the gateway and
workers use), sent to the gateway's own port over grpc.aio with the caller's token and
``x-api-version``, and the answer comes back as JSON: the response decoded with the same
descriptors, or the status with its ``google.rpc`` details (field violations, retry info),
plus the trailers, the request id and the time the call took.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from runtime.errors import InvalidArgument, NotFound
from runtime.gtype import GType, Schema
from runtime.lcc import to_jsonable
from runtime.status import REQUEST_ID_KEY
from runtime.versions import VersionCatalog
from runtime.wire import method_path, request_message, response_message

__all__ = ["CALL_TIMEOUT", "Explorer", "encode_request"]

CALL_TIMEOUT = 30.0
"""Seconds the explorer waits for the gateway before giving up on a call."""

_DETAILS_KEY = "grpc-status-details-bin"
_DETAIL_TYPES = (
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.ErrorInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.DebugInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
    error_details_pb2.RequestInfo,
)
_FLAG = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _unknown_fields(value: Any, node: GType, schema: Schema, path: str, out: list[str]) -> None:
    """Names in ``value`` that the version's schema does not have (the codec would drop them)."""
    node = schema.resolve(node)
    if node.kind == "object" and isinstance(value, Mapping):
        known = {f.name: f for f in node.fields}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in known:
                out.append(where)
            else:
                _unknown_fields(item, known[key].type, schema, where, out)
    elif node.kind == "array" and node.items is not None and isinstance(value, list):
        for index, item in enumerate(value):
            _unknown_fields(item, node.items, schema, f"{path}[{index}]", out)


def encode_request(catalog: VersionCatalog, version: str, method: str, request: Any) -> bytes:
    """The request JSON as protobuf bytes of ``version``; a field the version does not have, or a
    value protobuf cannot hold, is :class:`InvalidArgument` naming it."""
    info = catalog.by_id[version]
    if not any(m.name == method for m in info.schema.methods):
        raise NotFound(f"{catalog.module} {version} has no method {method}")
    if not isinstance(request, Mapping):
        raise InvalidArgument(f"the request is a JSON object, not {type(request).__name__}")
    unknown: list[str] = []
    _unknown_fields(request, info.schema.method(method).request, info.schema, "", unknown)
    if unknown:
        raise InvalidArgument(
            f"{request_message(method)} at {version} has no field {', '.join(repr(u) for u in unknown)}"
        )
    try:
        return catalog.wire(version).encode(request_message(method), request)
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidArgument(f"cannot encode the request as {request_message(method)} at {version}: {exc}") from exc


def _details(trailers: Sequence[tuple[str, str | bytes]]) -> list[dict[str, Any]]:
    raw = next((v for k, v in trailers if k == _DETAILS_KEY and isinstance(v, bytes)), None)
    if raw is None:
        return []
    try:
        status = status_pb2.Status.FromString(raw)
    except DecodeError:
        return [{"type": "undecodable", "bytes": len(raw)}]
    out = []
    for any_detail in status.details:
        for cls in _DETAIL_TYPES:
            if any_detail.Is(cls.DESCRIPTOR):
                detail = cls()
                any_detail.Unpack(detail)
                out.append({"type": cls.DESCRIPTOR.full_name, **json_format.MessageToDict(detail, preserving_proto_field_name=True)})
                break
        else:
            out.append({"type": any_detail.type_url.rsplit("/", 1)[-1]})
    return out


def _pairs(metadata: Any) -> list[tuple[str, str | bytes]]:
    """grpc's metadata (typed loosely by grpc-stubs) as plain key/value pairs."""
    return [(str(key), value) for key, value in metadata or ()]


def _trailers(metadata: Sequence[tuple[str, str | bytes]] | None) -> list[list[str]]:
    out = []
    for key, value in metadata or ():
        if key == _DETAILS_KEY:
            continue
        out.append([key, value if isinstance(value, str) else f"<{len(value)} bytes>"])
    return out


class Explorer:
    """Sends explorer calls to one gateway address. Create and use it on one event loop."""

    def __init__(self, address: str, *, max_message_bytes: int) -> None:
        self._address = address
        self._max = max_message_bytes
        self._channel: grpc.aio.Channel | None = None

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self._address,
                options=[
                    ("grpc.max_send_message_length", self._max),
                    ("grpc.max_receive_message_length", self._max),
                ],
            )
        return self._channel

    async def call(
        self,
        catalog: VersionCatalog,
        *,
        method: str,
        version: str,
        request: Any,
        token: str | None,
        flags: Sequence[str] = (),
    ) -> dict[str, Any]:
        """One call through the gateway; every outcome, success or status, is an answer."""
        version = catalog.resolve(version)
        payload = encode_request(catalog, version, method, request)
        request_id = f"pg-{uuid.uuid4().hex[:20]}"
        metadata: list[tuple[str, str]] = [(REQUEST_ID_KEY, request_id), ("x-api-version", version)]
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        bad = [f for f in flags if not _FLAG.match(f)]
        if bad:
            raise InvalidArgument(f"flags are names of letters, digits, '.', '_' or '-': {bad!r}")
        if flags:
            metadata.append(("x-flags", ",".join(flags)))
        path = method_path(catalog.module, method)
        stub: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._open().unary_unary(
            path, request_serializer=None, response_deserializer=None
        )
        started = time.perf_counter()
        call = stub(payload, metadata=metadata, timeout=CALL_TIMEOUT)
        answer: dict[str, Any] = {"path": path, "version": version, "sent_request_id": request_id, "metadata": [list(m) for m in metadata if m[0] != "authorization"]}
        try:
            response = await call
        except grpc.aio.AioRpcError as error:
            elapsed = (time.perf_counter() - started) * 1000
            trailers = _pairs(error.trailing_metadata())
            answer.update(
                code=error.code().name,
                message=error.details() or "",
                details=_details(trailers),
                trailers=_trailers(trailers),
                response=None,
            )
        else:
            elapsed = (time.perf_counter() - started) * 1000
            trailers = _pairs(await call.trailing_metadata())
            decoded = catalog.wire(version).decode(response_message(method), response)
            answer.update(
                code="OK", message="", details=[], trailers=_trailers(trailers), response=to_jsonable(decoded)
            )
        answer["elapsed_ms"] = round(elapsed, 3)
        answer["request_id"] = next((str(v) for k, v in trailers if k == REQUEST_ID_KEY), request_id)
        return answer

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
