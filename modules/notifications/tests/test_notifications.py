"""The notifications module: users.created events become welcome notifications, once each."""

from __future__ import annotations

import asyncio
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


async def test_a_watcher_gets_each_new_notification_as_it_is_sent(notifications: ModuleHarness) -> None:
    """WatchNotifications streams what ``welcome`` sends, through ``notifications.sent``."""
    user_id = uuid.uuid4().hex
    watch = notifications.stream("WatchNotifications", {"user_id": user_id}, timeout=5)
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.05)  # the watch is open before the user is created
    await notifications.deliver("users.created", {"id": user_id, "email": "ada@example.com", "given_name": "Ada"})
    (sent,) = [p for p in notifications.published if p.topic == "notifications.sent"]
    assert sent.json()["user_id"] == user_id
    assert await notifications.deliver("notifications.sent", sent.data) == 1  # what every worker hears
    first = await asyncio.wait_for(pending, 5)
    assert (first["user_id"], first["message"]) == (user_id, "Welcome, Ada!")
    await watch.aclose()  # the caller hangs up: the watch ends, its queue is dropped
    assert notifications.audit[-1].outcome == "CANCELLED"
    assert notifications.audit[-1].messages == {"received": 1, "sent": 1}


async def test_a_watch_for_one_user_skips_the_others(notifications: ModuleHarness) -> None:
    mine, other = uuid.uuid4().hex, uuid.uuid4().hex
    watch = notifications.stream("WatchNotifications", {"user_id": mine}, timeout=5)
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.05)
    for user in (other, mine):
        await notifications.deliver("users.created", {"id": user, "email": f"{user}@example.com"})
    for published in [p for p in notifications.published if p.topic == "notifications.sent"]:
        await notifications.deliver("notifications.sent", published.data)
    assert (await asyncio.wait_for(pending, 5))["user_id"] == mine
    await watch.aclose()


async def test_a_watcher_that_falls_too_far_behind_is_ended_resource_exhausted(notifications: ModuleHarness) -> None:
    """A watcher that reads nothing while more than WATCH_BACKLOG notifications go out is ended
    RESOURCE_EXHAUSTED (it watches again) instead of being buffered for without bound; the
    others are not held back by it."""
    from modules.notifications.handlers import WATCH_BACKLOG
    from runtime.errors import ResourceExhausted

    slow = notifications.stream("WatchNotifications", {}, timeout=10)
    first = asyncio.ensure_future(anext(slow))
    await asyncio.sleep(0.05)  # the watch is open
    for n in range(WATCH_BACKLOG + 2):
        note = {
            "id": f"n{n}", "user_id": f"u{n}", "email": f"u{n}@example.com", "message": "hi",
            "created_at": "2026-12-06T00:00:00Z",
        }  # fmt: skip
        assert await notifications.deliver("notifications.sent", note) == 1
    assert (await asyncio.wait_for(first, 5))["message"] == "hi"  # what it had taken before it fell behind
    with pytest.raises(ResourceExhausted, match=f"more than {WATCH_BACKLOG} notifications behind"):
        while True:
            await asyncio.wait_for(anext(slow), 5)
    assert notifications.audit[-1].outcome == "RESOURCE_EXHAUSTED"
