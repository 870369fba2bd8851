"""The users module through its lifecycle: versions, transformers, events, errors, audit."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from runtime.errors import AlreadyExists, InvalidArgument, NotFound
from runtime.testing import ManualClock, ModuleHarness

NOW = datetime(2025, 7, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def users(module_harness: Callable[..., ModuleHarness]) -> ModuleHarness:
    return module_harness("users", clock=ManualClock(NOW))


def email() -> str:
    return f"ada-{uuid.uuid4().hex[:10]}@example.com"


async def create(users: ModuleHarness, **fields: Any) -> dict[str, Any]:
    return await users.call("CreateUser", {"given_name": "Ada", "family_name": "Lovelace", "email": email(), **fields})


async def test_create_user_stamps_the_clock_and_announces_the_user(users: ModuleHarness) -> None:
    user = await create(users)
    assert user["created_at"] == NOW
    (event,) = users.published
    assert event.topic == "users.created"
    assert event.msg_id == f"users.created:{user['id']}"
    assert event.json()["email"] == user["email"]
    assert event.headers["x-request-id"] == users.audit[-1].request_id


async def test_a_client_pinned_to_2025_01_15_sends_and_reads_name(users: ModuleHarness) -> None:
    """The old version's shape goes through the transformers in both directions."""
    old = await users.call("CreateUser", {"name": "Grace Hopper", "email": email()}, version="2025-01-15")
    assert old["name"] == "Grace Hopper" and "given_name" not in old
    new = await users.call("GetUser", {"id": old["id"]})
    assert (new["given_name"], new["family_name"]) == ("Grace", "Hopper")
    again = await users.call("GetUser", {"id": old["id"]}, version="2025-01-15")
    assert again["name"] == "Grace Hopper"


async def test_a_taken_email_is_already_exists(users: ModuleHarness) -> None:
    user = await create(users)
    with pytest.raises(AlreadyExists, match="already exists"):
        await create(users, email=user["email"])
    assert users.audit[-1].outcome != "ok"


async def test_a_bad_request_names_every_field_at_fault(users: ModuleHarness) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await users.call("CreateUser", {"given_name": "", "family_name": "L", "email": "not-an-email"})
    assert "given_name" in caught.value.message and "email" in caught.value.message
    assert users.published == []


async def test_an_unknown_id_is_not_found(users: ModuleHarness) -> None:
    with pytest.raises(NotFound, match="no user with id 'nope'"):
        await users.call("GetUser", {"id": "nope"})


async def test_every_call_leaves_an_audit_record_with_its_lifecycle(users: ModuleHarness) -> None:
    await create(users)
    record = users.audit[-1]
    assert record.method == "/users.v1.UsersService/CreateUser"
    assert record.outcome == "ok" and record.version == users.versions[-1]
    kinds = [e["kind"] for e in record.events]
    assert kinds[0] == "lifecycle_start" and kinds[-1] == "lifecycle_end"
