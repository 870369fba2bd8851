"""Ingress properties through a real gateway: request ids (3), spans (22) and roles (35).

Each test starts its workers and one gateway once and shares them between its examples (hence
the suppressed function-scoped-fixture health check): examples only send calls, each with ids
of its own. Every example is real gRPC calls over loopback, which take milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from runtime.identity import is_valid_request_id
from runtime.observability import HANDLER_ATTRIBUTE, REQUEST_ID_ATTRIBUTE, VERSION_ATTRIBUTE
from tests.fixtures.gateway_modules.stack import GatewayClient, GatewayStack

SHARED = [HealthCheck.function_scoped_fixture]
"""One gateway per test, shared by its examples (see the module docstring)."""

ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
_serial = itertools.count()

valid_ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=100)
invalid_ids = st.one_of(
    st.tuples(
        st.text(alphabet=ID_ALPHABET, min_size=1, max_size=20),
        st.sampled_from(list(" !\"#$%&'()*+,/;<=>?@[\\]^`{|}~")),
        st.text(alphabet=ID_ALPHABET, min_size=1, max_size=20),
    ).map("".join),
    st.text(alphabet=ID_ALPHABET, min_size=129, max_size=160),
)
"""Ids a caller may send that are not well formed: a stray character, or too long."""


@pytest.fixture
async def tally(
    gw_stack: GatewayStack, gw_modules: dict[str, Path]
) -> tuple[GatewayStack, GatewayClient]:
    await gw_stack.worker("tally", tree=gw_modules["main"])
    gateway = await gw_stack.gateway(ready=["tally"])
    return gw_stack, gw_stack.client(gateway)


# -- Property 3 ------------------------------------------------------------------------------------

generated: set[str] = set()
"""Request ids the gateway generated, over every example of the test."""


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED)
@given(
    batch=st.lists(
        st.one_of(
            st.none(), valid_ids.map(lambda v: (v, True)), invalid_ids.map(lambda v: (v, False))
        ),
        min_size=1,
        max_size=6,
    )
)
async def test_every_call_through_the_gateway_gets_a_unique_request_id(
    tally: tuple[GatewayStack, GatewayClient], batch: list[tuple[str, bool] | None]
) -> None:
    """Property 3: Every request gets a unique request id and completes its whole lifecycle.

    Through the gateway: a well-formed caller ``x-request-id`` is kept, a missing or malformed
    one is replaced by a fresh id never seen before, and either way the id comes back in the
    initial metadata and is the id the worker's handler saw in ``lctx.meta`` (the handler ran to
    the end: its reply is the proof). Calls of one example run concurrently.
    """
    _, client = tally

    async def one(sent: tuple[str, bool] | None) -> None:
        metadata: list[tuple[str, str]] = []
        if sent is not None:
            value, valid = sent
            if valid:  # unique per call, still well formed
                value = f"{value[:90]}.{next(_serial)}"
            metadata.append(("x-request-id", value))
        reply = await client.call("tally", "Ping", {"text": "p3"}, metadata=metadata)
        assert reply.ok and reply.body is not None, reply.details
        assert is_valid_request_id(reply.request_id)
        assert reply.body["request_id"] == reply.request_id
        if sent is not None and sent[1]:
            assert reply.request_id == metadata[0][1]
        else:
            assert reply.request_id not in generated, "a generated id was handed out twice"
            generated.add(reply.request_id)

    await asyncio.gather(*(one(sent) for sent in batch))


# -- Property 35 -----------------------------------------------------------------------------------

ROLES = ("tally:read", "tally:admin", "tally:write", "users:read")
REQUIRED = {"tally:read", "tally:admin"}
"""What ``tally.Guarded`` requires (its module.toml)."""


@settings(max_examples=16, deadline=None, suppress_health_check=SHARED)
@given(held=st.sets(st.sampled_from(ROLES)))
async def test_roles_are_enforced_at_the_gateway(
    tally: tuple[GatewayStack, GatewayClient], held: set[str]
) -> None:
    """Property 35: Roles are enforced.

    A caller reaches ``tally.Guarded`` iff its token holds every role the method requires;
    otherwise PERMISSION_DENIED names a missing role. The input space is the 16 subsets of
    four roles, hence 16 examples (the pure ``check_roles`` property runs 100).
    """
    stack, client = tally
    reply = await client.call("tally", "Guarded", {"text": "r"}, token=stack.token(*sorted(held)))
    if REQUIRED <= held:
        assert reply.ok and reply.body is not None and reply.body["subject"] == "ada"
    else:
        assert reply.code == grpc.StatusCode.PERMISSION_DENIED
        assert any(role in reply.details for role in REQUIRED - held), reply.details


# -- Property 22 -----------------------------------------------------------------------------------


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    """The session's span exporter (see ``tests/conftest.py``)."""
    return span_exporter


async def spans_of(
    exporter: InMemorySpanExporter, request_id: str, count: int
) -> list[ReadableSpan]:
    """The finished spans tagged with ``request_id``, once there are ``count`` of them.

    A server span ends just after its response is sent, so it may finish after the caller has
    its reply; wait for it (bounded) rather than assume it is there.
    """
    give_up = time.monotonic() + 5.0
    while True:
        found = [
            s
            for s in exporter.get_finished_spans()
            if (s.attributes or {}).get(REQUEST_ID_ATTRIBUTE) == request_id
        ]
        if len(found) >= count or time.monotonic() > give_up:
            return found
        await asyncio.sleep(0.005)


USERS_HEADERS = {
    None: "2025-06-01",
    "stable": "2025-06-01",
    "2025-01-15": "2025-01-15",
    "2025-03-01": "2025-01-15",
}


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED)
@given(
    header=st.sampled_from(sorted(USERS_HEADERS, key=str)),
    caller_id=st.none() | valid_ids,
    method=st.sampled_from(["GetUser", "CreateUser"]),
)
async def test_spans_carry_the_request_id_handler_id_and_version(
    spans: InMemorySpanExporter,
    users_traced: tuple[GatewayStack, GatewayClient],
    header: str | None,
    caller_id: str | None,
    method: str,
) -> None:
    """Property 22: Spans carry the request id, handler id and version.

    One call through the gateway makes three spans: the gateway's server span, its client span
    to the worker, and the worker's server span, all in one trace. Each carries the request id
    (the caller's, or the one the gateway generated), a handler attribute naming the method,
    and a version: the one the caller's header resolved to on the gateway's server span, the
    served version the worker was asked for on the other two. The gateway's spans name the
    handler by its id, ``users.GetUser``.
    """
    stack, client = users_traced
    metadata = []
    if caller_id is not None:
        caller_id = f"{caller_id[:90]}.{next(_serial)}"
        metadata.append(("x-request-id", caller_id))
    # Calls that fail at the worker (no such user, a bad email), so examples leave no rows behind.
    # At 2025-01-15 the gateway itself refuses what that version's contract refuses, so the
    # email is one the contract accepts and the handler's model (EmailStr) refuses.
    if method == "GetUser":
        fields = {"id": "nobody"}
    elif USERS_HEADERS[header] == "2025-01-15":
        fields = {"name": "A B", "email": "a@b"}
    else:
        fields = {"given_name": "A", "email": "nope"}
    reply = await client.call(
        "users",
        method,
        fields,
        version=header,
        token=stack.token("users:read", "users:write"),
        metadata=metadata,
    )
    assert reply.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), (
        reply.details
    )
    request_id = reply.request_id
    assert caller_id is None or request_id == caller_id

    found = await spans_of(spans, request_id, 3)
    await asyncio.sleep(0.05)  # a retried attempt's spans (GetUser has a per_try_timeout) end too
    found = await spans_of(spans, request_id, 3)
    by_kind = sorted(found, key=lambda s: (s.kind.value, s.start_time or 0))
    servers = [s for s in by_kind if s.kind == SpanKind.SERVER]
    clients = [s for s in by_kind if s.kind == SpanKind.CLIENT]
    # One attempt normally; a loaded machine may make an idempotent GetUser try again.
    assert len(clients) >= 1 and len(servers) == len(clients) + 1, [(s.name, s.kind) for s in found]
    attempts = {c.context.span_id for c in clients}
    gateway_server = next(s for s in servers if s.parent is None or s.parent.span_id not in attempts)
    worker_servers = [s for s in servers if s is not gateway_server]
    assert all(w.parent is not None and w.parent.span_id in attempts for w in worker_servers)
    worker_server = worker_servers[-1]
    assert len({s.context.trace_id for s in found}) == 1, "one trace from gateway to worker"

    for span in found:
        attributes = span.attributes or {}
        assert attributes[REQUEST_ID_ATTRIBUTE] == request_id
        assert str(attributes[HANDLER_ATTRIBUTE]).endswith(method)
    assert (gateway_server.attributes or {})[VERSION_ATTRIBUTE] == USERS_HEADERS[header]
    assert (gateway_server.attributes or {})[HANDLER_ATTRIBUTE] == f"users.{method}"
    assert (clients[0].attributes or {})[HANDLER_ATTRIBUTE] == f"users.{method}"
    for span in (clients[0], worker_server):
        assert (span.attributes or {})[VERSION_ATTRIBUTE] == "2025-06-01"


@pytest.fixture
async def users_traced(
    spans: InMemorySpanExporter, gw_stack: GatewayStack
) -> tuple[GatewayStack, GatewayClient]:
    """A users worker and a gateway, started after the span exporter is in place."""
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    return gw_stack, gw_stack.client(gateway)
