"""Property 17: transformer chains run forward on the request and backward on the response.

The first test drives the users module's real step (2025-01-15 → 2025-06-01, which split
``name`` into ``given_name`` and ``family_name``) along the gateway's path: old bytes, decode,
forward, encode at the new version, a response in the new shape, backward, old bytes. The
second composes synthetic chains of up to ten hops.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules.users.transformers.v2025_06_01 import split_name
from runtime.gtype import validate
from runtime.versions import VersionCatalog, run_chain
from runtime.versions._chain import MAX_HOPS, TransformStep

REPO = Path(__file__).resolve().parents[2]
OLD, NEW = "2025-01-15", "2025-06-01"

# Every name 2025-01-15 accepts: 1 to 200 characters of any kind, spaces anywhere included.
names = (
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=200)
    | st.text(" ab", min_size=1, max_size=8)
    | st.sampled_from([" Grace", "Grace ", "   ", "Ada  King", "x" * 200, "a " * 100])
)
emails = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10).map(
    lambda local: f"{local}@example.com"
)
instants = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)
)


@pytest.fixture(scope="module")
def users() -> VersionCatalog:
    return VersionCatalog.from_module_dir("users", REPO / "modules" / "users", {"stable": NEW})


async def _through_the_gateway(
    catalog: VersionCatalog, name: str, email: str, at: dt.datetime
) -> dict[str, Any]:
    route = catalog.route(OLD, served=[NEW])
    assert route is not None
    target, steps = route
    assert target == NEW and [(s.from_version, s.to_version) for s in steps] == [(OLD, NEW)]
    old, new = catalog.wire(OLD), catalog.wire(NEW)
    new_schema = catalog.by_id[NEW].schema
    old_schema = catalog.by_id[OLD].schema

    request = {"name": name, "email": email}
    assert validate(request, old_schema.method("CreateUser").request, old_schema) == []
    payload = old.encode("CreateUserRequest", request)
    forwarded = await run_chain(
        steps, "CreateUser", old.decode("CreateUserRequest", payload), direction="forward"
    )
    assert validate(forwarded, new_schema.method("CreateUser").request, new_schema) == []
    given_name, family_name = split_name(name)
    assert forwarded == {"given_name": given_name, "family_name": family_name, "email": email}

    # The 2025-06-01 handler answers in its own shape.
    served = new.decode("CreateUserRequest", new.encode("CreateUserRequest", forwarded))
    reply = {"id": "u1", **served, "created_at": at}
    reply_bytes = new.encode("CreateUserResponse", reply)
    back = await run_chain(
        steps, "CreateUser", new.decode("CreateUserResponse", reply_bytes), direction="backward"
    )
    final = old.decode("CreateUserResponse", old.encode("CreateUserResponse", back))
    assert validate(final, old_schema.method("CreateUser").response, old_schema) == []
    return final


@given(names, emails, instants)
@settings(max_examples=100, deadline=None)
def test_users_round_trip_through_forward_and_backward_keeps_the_name(
    users: VersionCatalog, name: str, email: str, at: dt.datetime
) -> None:
    """Property 17: Transformer chains run forward on the request and backward on the response,
    and a round trip loses nothing (users 2025-01-15 ↔ 2025-06-01, real transformers).

    Every request valid at 2025-01-15 (any name of 1 to 200 characters, spaces anywhere)
    transforms into a request valid at 2025-06-01, and its name comes back exactly."""
    final = asyncio.run(_through_the_gateway(users, name, email, at))
    assert final == {"id": "u1", "name": name, "email": email, "created_at": at}


def _tagger(tag: str, *, is_async: bool) -> Any:
    def tag_it(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "trail": [*data["trail"], tag]}

    async def tag_it_async(data: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return tag_it(data)

    return tag_it_async if is_async else tag_it


# Per hop: (has a forward function, has a backward function, functions are async).
hops = st.lists(
    st.tuples(st.booleans(), st.booleans(), st.booleans()), min_size=1, max_size=MAX_HOPS
)


@given(hops)
@settings(max_examples=100, deadline=None)
def test_chains_of_up_to_ten_hops_compose_in_order(plan: list[tuple[bool, bool, bool]]) -> None:
    """Property 17: Transformer chains run forward on the request and backward on the response.

    Requests go through the hops oldest first, responses newest first; a hop with no function
    for the method passes the data through untouched.
    """
    steps = [
        TransformStep(
            "demo",
            f"v{i}",
            f"v{i + 1}",
            forward={"Put": _tagger(f"f{i}", is_async=a)} if fwd else {},
            backward={"Put": _tagger(f"b{i}", is_async=a)} if bwd else {},
        )
        for i, (fwd, bwd, a) in enumerate(plan)
    ]
    start = {"trail": [], "payload": "x"}

    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        forward = await run_chain(steps, "Put", start, direction="forward")
        backward = await run_chain(steps, "Put", start, direction="backward")
        return forward, backward

    forward, backward = asyncio.run(both())
    assert forward == {
        "trail": [f"f{i}" for i, (fwd, _, _) in enumerate(plan) if fwd],
        "payload": "x",
    }
    assert backward == {
        "trail": [f"b{i}" for i, (_, bwd, _) in reversed(list(enumerate(plan))) if bwd],
        "payload": "x",
    }
    assert start == {"trail": [], "payload": "x"}
