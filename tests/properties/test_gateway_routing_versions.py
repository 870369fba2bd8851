"""Version routing through a real gateway: Properties 15, 16, 17 and 33 over real sockets.

Each test starts its workers and one gateway once and shares them between its examples (hence
the suppressed function-scoped-fixture health check): no example changes what is served, each
only sends calls. Every example is real gRPC calls through the gateway to workers; on loopback
they take milliseconds, so every test keeps Hypothesis' 100 examples.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.gateway_modules.stack import GatewayClient, GatewayStack

SHARED = [HealthCheck.function_scoped_fixture]
"""One gateway per test, shared by its examples (see the module docstring)."""

zones = st.text(alphabet="abcdefghijklmnopqrstuvwxyz/_", min_size=1, max_size=20)


@pytest.fixture
async def clocks(gw_stack: GatewayStack, gw_modules: dict[str, Path]) -> GatewayClient:
    """Two clock workers side by side: one whose newest version is 2025-01-15, one 2025-06-01."""
    await gw_stack.worker("clock", tree=gw_modules["side_v1"])
    await gw_stack.worker("clock", tree=gw_modules["side_v2"])
    gateway = await gw_stack.gateway(ready=["clock"])
    assert set(gateway.table.modules["clock"].served) == {"2025-01-15", "2025-06-01"}
    return gw_stack.client(gateway)


CLOCK_HEADERS = {
    None: "2025-06-01",
    "latest": "2025-06-01",
    "2025-06-01": "2025-06-01",
    "2025-01-15": "2025-01-15",
    "2025-03-01": "2025-01-15",
    "2025-03-01T12:00:00Z": "2025-01-15",
    "1740000000": "2025-01-15",
    "2031-01-01": "2025-06-01",
}
"""``x-api-version`` → the clock version it resolves to (no ``stable`` label: latest wins)."""


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED)
@given(
    calls=st.lists(
        st.tuples(st.sampled_from(sorted(CLOCK_HEADERS, key=str)), zones), min_size=1, max_size=8
    )
)
async def test_breaking_versions_without_transformers_are_routed_by_header(
    clocks: GatewayClient, calls: list[tuple[str | None, str]]
) -> None:
    """Property 16: Breaking versions with no transformers are routed by header.

    clock 2025-06-01 added a required request field and has no transformers, so a worker of
    each version runs side by side. Every call, concurrent with others at other versions,
    reaches the worker whose code is the version its ``x-api-version`` resolves to, never the
    other one. Each example is up to 8 concurrent calls over real sockets.
    """

    async def one(header: str | None, zone: str) -> None:
        expected = CLOCK_HEADERS[header]
        fields: dict[str, object] = {"zone": zone}
        if expected == "2025-06-01":
            fields["precision"] = 3
        reply = await clocks.call("clock", "Tell", fields, version=header)
        assert reply.ok, f"{header}: {reply.code} {reply.details}"
        assert reply.body == {"zone": zone, "served": expected}

    await asyncio.gather(*(one(header, zone) for header, zone in calls))


# -- Property 15: a compatible version is activated ------------------------------------------------


@pytest.fixture
async def notes(gw_stack: GatewayStack, gw_modules: dict[str, Path]) -> GatewayClient:
    """One notes worker: its code is 2025-06-01, which only added optional fields to 2025-01-15."""
    await gw_stack.worker("notes", tree=gw_modules["main"])
    gateway = await gw_stack.gateway(ready=["notes"])
    assert gateway.table.modules["notes"].served == ("2025-06-01",)
    return gw_stack.client(gateway)


NOTES_HEADERS = {None: "2025-06-01", "latest": "2025-06-01", "2025-06-01": "2025-06-01",
                 "2025-01-15": "2025-01-15", "2025-02-01T00:00:00Z": "2025-01-15"}  # fmt: skip
texts = st.text(alphabet="abc xyz", min_size=1, max_size=30)


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED)
@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(sorted(NOTES_HEADERS, key=str)),
            texts,
            st.none() | st.text("tag", min_size=1, max_size=5),
        ),
        min_size=1,
        max_size=6,
    )
)
async def test_a_non_breaking_version_is_activated(
    notes: GatewayClient, calls: list[tuple[str | None, str, str | None]]
) -> None:
    """Property 15: A non-breaking version is activated.

    notes 2025-06-01 only added optional fields, so it takes the traffic of both versions with
    no transformer and nothing decoded on the way: the gateway's plan for 2025-01-15 is the
    served 2025-06-01 with nothing transformed (the old bytes, checked at 2025-01-15, go as they are). A caller at 2025-01-15 reads the old shape,
    one at 2025-06-01 the new one. Each example is up to 6 concurrent calls over real sockets.
    """
    route = notes.gateway.table.routes["/notes.v1.NotesService/Measure"]
    target, conversion = route.plan("2025-01-15") or ("", None)
    assert target == "2025-06-01" and conversion is not None and not conversion.transforms
    assert route.plan("2025-06-01") == ("2025-06-01", None)

    async def one(header: str | None, text: str, tag: str | None) -> None:
        shape = NOTES_HEADERS[header]
        fields: dict[str, object] = {"text": text}
        if shape == "2025-06-01" and tag is not None:
            fields["tag"] = tag
        reply = await notes.call("notes", "Measure", fields, version=header)
        assert reply.ok, f"{header}: {reply.code} {reply.details}"
        expected: dict[str, object] = {"text": text, "length": len(text)}
        if shape == "2025-06-01":
            expected["words"] = len(text.split())
            if tag is not None:
                expected["tag"] = tag
        assert reply.body == expected

    await asyncio.gather(*(one(*call) for call in calls))


# -- Property 17: transformer chains both ways, losing nothing ---------------------------------------


@pytest.fixture
async def users_gateway(gw_stack: GatewayStack) -> tuple[GatewayClient, str]:
    """A users worker (serving 2025-06-01 only), a gateway, and a token for reads and writes."""
    await gw_stack.worker("users")
    gateway = await gw_stack.gateway(ready=["users"])
    assert gateway.table.modules["users"].served == ("2025-06-01",)
    return gw_stack.client(gateway), gw_stack.token("users:read", "users:write")


words = st.text(st.characters(categories=["L"]), min_size=1, max_size=12)
names = st.lists(words, min_size=1, max_size=4).map(" ".join)
"""Names as a 2025-01-15 caller writes them: words joined by single spaces."""


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED)
@given(name=names)
async def test_an_old_version_round_trip_through_the_gateway_loses_nothing(
    users_gateway: tuple[GatewayClient, str], name: str
) -> None:
    """Property 17: Transformer chains run forward on the request and backward on the response,
    and a round trip loses nothing.

    A 2025-01-15 CreateUser is transformed forward (``name`` split on its first space) for the
    2025-06-01 worker and its response backward; the caller gets its ``name`` back unchanged,
    and so does a later GetUser at 2025-01-15, while a stable reader sees the split. Each
    example is three calls through the gateway and a row written to the users store.
    """
    client, token = users_gateway
    email = f"p17-{uuid.uuid4().hex[:12]}@example.com"
    created = await client.call(
        "users", "CreateUser", {"name": name, "email": email}, version="2025-01-15", token=token
    )
    assert created.ok, created.details
    assert created.body is not None
    assert (created.body["name"], created.body["email"]) == (name, email)

    again = await client.call(
        "users", "GetUser", {"id": created.body["id"]}, version="2025-01-15", token=token
    )
    assert again.ok and again.body == created.body

    split = await client.call("users", "GetUser", {"id": created.body["id"]}, token=token)
    assert split.ok and split.body is not None
    given_name, _, family_name = name.partition(" ")
    assert (split.body["given_name"], split.body["family_name"]) == (given_name, family_name)


# -- Property 33: version resolution at the gateway ------------------------------------------------

V1_AT, V2_AT = 1736899200.0, 1748736000.0
"""The instants users 2025-01-15 and 2025-06-01 take effect (midnight UTC of each date)."""

FIXED_HEADERS: dict[str | None, str | grpc.StatusCode] = {
    None: "2025-06-01",
    "stable": "2025-06-01",
    "latest": "2025-06-01",
    "2025-01-15": "2025-01-15",
    "2025-06-01": "2025-06-01",
    "2025-13-45": grpc.StatusCode.INVALID_ARGUMENT,
    "!!!": grpc.StatusCode.INVALID_ARGUMENT,
    "nightly": grpc.StatusCode.NOT_FOUND,
    "v9.9.9": grpc.StatusCode.NOT_FOUND,
    "tsv:1748736000-users-1": grpc.StatusCode.NOT_FOUND,
}
"""Labels, ids and refused values, with the version or status each must give."""


def expected_at(instant: float) -> str | grpc.StatusCode:
    if instant < V1_AT:
        return grpc.StatusCode.NOT_FOUND
    return "2025-01-15" if instant < V2_AT else "2025-06-01"


moments = st.datetimes(
    min_value=datetime(2024, 6, 1), max_value=datetime(2026, 6, 1), timezones=st.just(UTC)
)
headers = st.one_of(
    st.sampled_from(sorted(FIXED_HEADERS, key=str)).map(lambda h: (h, FIXED_HEADERS[h])),
    moments.map(lambda m: (m.isoformat(), expected_at(m.timestamp()))),
    moments.map(lambda m: (str(int(m.timestamp())), expected_at(float(int(m.timestamp()))))),
    moments.map(
        lambda m: (
            m.date().isoformat(),
            expected_at(datetime(m.year, m.month, m.day, tzinfo=UTC).timestamp()),
        )
    ),
)


@pytest.fixture
async def grace(users_gateway: tuple[GatewayClient, str]) -> tuple[GatewayClient, str, str]:
    """The users gateway, its token, and the id of a user created at stable."""
    client, token = users_gateway
    email = f"p33-{uuid.uuid4().hex[:12]}@example.com"
    body = {"given_name": "Grace", "family_name": "Hopper", "email": email}
    created = await client.call("users", "CreateUser", body, token=token)
    assert created.ok and created.body is not None, created.details
    return client, token, created.body["id"]


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED)
@given(case=headers)
async def test_the_gateway_resolves_x_api_version_per_spec(
    grace: tuple[GatewayClient, str, str], case: tuple[str | None, str | grpc.StatusCode]
) -> None:
    """Property 33: Version resolution is correct (at the gateway).

    A label, version id, date, ISO timestamp or unix seconds selects the newest version at or
    before it, which shows in the reply's shape (``name`` at 2025-01-15, ``given_name`` at
    2025-06-01); an instant before every version, an unknown label or tsv id is NOT_FOUND and
    an unparsable value INVALID_ARGUMENT. Each example is one call through the gateway.
    """
    client, token, user_id = grace
    header, expected = case
    catalog = client.gateway.table.modules["users"].catalog
    old, new = catalog.wire("2025-01-15"), catalog.wire("2025-06-01")
    payload = new.encode("GetUserRequest", {"id": user_id})  # the same bytes in both versions
    metadata = [("authorization", f"Bearer {token}")]
    if header is not None:
        metadata.append(("x-api-version", header))
    reply = await client.call_raw("/users.v1.UsersService/GetUser", payload, metadata=metadata)
    if isinstance(expected, grpc.StatusCode):
        assert reply.code == expected, f"{header!r}: {reply.code} {reply.details}"
        assert reply.request_id
        return
    assert reply.ok and reply.body is not None, f"{header!r}: {reply.code} {reply.details}"
    as_old = old.decode("GetUserResponse", reply.body["raw"])
    as_new = new.decode("GetUserResponse", reply.body["raw"])
    if expected == "2025-01-15":
        assert as_old.get("name") == "Grace Hopper" and "given_name" not in as_new
    else:
        assert as_new.get("given_name") == "Grace" and "name" not in as_old
