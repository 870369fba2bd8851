"""The notifications module: users.created events become welcome notifications, once each."""

from __future__ import annotations

import uuid

import pytest

from runtime.testing import ModuleHarness


@pytest.fixture
def notifications(module_harness: object) -> ModuleHarness:
    return module_harness("notifications")  # type: ignore[operator, no-any-return]


async def test_a_new_user_gets_one_welcome_however_often_the_event_comes(notifications: ModuleHarness) -> None:
    user_id = uuid.uuid4().hex
    event = {"id": user_id, "email": "grace@example.com", "given_name": "Grace"}
    assert await notifications.deliver("users.created", event) == 1
    assert await notifications.deliver("users.created", event) == 1  # redelivered
    listed = await notifications.call("ListNotifications", {"user_id": user_id})
    (item,) = listed["items"]
    assert (item["email"], item["message"]) == ("grace@example.com", "Welcome, Grace!")
    assert item["created_at"] == notifications.clock.now()


async def test_other_topics_reach_no_subscriber(notifications: ModuleHarness) -> None:
    assert await notifications.deliver("orders.created", {"id": "o1"}) == 0
