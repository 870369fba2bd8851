"""``notifications.ListNotifications`` answers in pages, so no answer grows with the list.

A real worker on a real socket, called with the generated clients of both versions: the paged
one, and the one from before paging existed (a caller pinned to 2025-01-15).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import grpc.aio
import pytest

from gen.notifications.v2025_01_15 import notifications_pb2 as v1_pb2
from gen.notifications.v2025_01_15.client import NotificationsClient as V1Client
from gen.notifications.v2026_12_06 import notifications_pb2
from gen.notifications.v2026_12_06.client import NotificationsClient
from modules.notifications import _sent
from modules.notifications.models import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Notification
from runtime.identity import PRINCIPAL_HEADER, Principal, principal_header
from tests.conftest import Dial, StartWorker

READER = [(PRINCIPAL_HEADER, principal_header(Principal("ada", ("notifications:read",), "jwt")))]


@pytest.fixture
async def sent(tmp_path: Path) -> AsyncIterator[list[Notification]]:
    """250 notifications, every fifth one for user ``u-0``, in a log of their own that the worker
    in this process reads."""
    saved = _sent._log
    log = _sent._log = _sent.SentLog(tmp_path / "notifications.sqlite3")
    notifications = [
        Notification(
            id=uuid.uuid4().hex, user_id=f"u-{n % 5}", email=f"u{n}@example.com",
            message=f"Welcome {n}", created_at=datetime.now(UTC),
        )
        for n in range(250)
    ]
    for notification in notifications:
        await log.add(notification)
    yield notifications
    _sent._log = saved


@pytest.fixture
async def channel(start_worker: StartWorker, dial: Dial) -> AsyncIterator[grpc.aio.Channel]:
    worker = await start_worker("notifications")
    async with dial(worker) as ch:
        yield ch


async def test_pages_follow_each_other_to_the_end_and_never_pass_the_maximum(
    channel: grpc.aio.Channel, sent: list[Notification]
) -> None:
    client = NotificationsClient(channel, metadata=READER)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await client.list_notifications(
            notifications_pb2.ListNotificationsRequest(page_size=MAX_PAGE_SIZE, page_token=token)
        )
        assert len(page.items) <= MAX_PAGE_SIZE
        seen += [item.id for item in page.items]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == [n.id for n in sent] and pages == 3
    first = await client.list_notifications(notifications_pb2.ListNotificationsRequest())
    assert len(first.items) == DEFAULT_PAGE_SIZE
    mine = await client.list_notifications(
        notifications_pb2.ListNotificationsRequest(user_id="u-0", page_size=40)
    )
    assert [i.id for i in mine.items] == [n.id for n in sent if n.user_id == "u-0"][:40]
    rest = await client.list_notifications(
        notifications_pb2.ListNotificationsRequest(user_id="u-0", page_token=mine.next_page_token)
    )
    assert len(rest.items) == 10 and rest.next_page_token == ""


async def test_a_page_too_big_or_a_forged_token_is_invalid_argument(
    channel: grpc.aio.Channel, sent: list[Notification]
) -> None:
    client = NotificationsClient(channel, metadata=READER)
    with pytest.raises(grpc.aio.AioRpcError) as too_big:
        await client.list_notifications(notifications_pb2.ListNotificationsRequest(page_size=MAX_PAGE_SIZE + 1))
    assert too_big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in (too_big.value.details() or "")
    negative = base64.urlsafe_b64encode(b"after:-5").decode()  # the tokens' shape, a place never given out
    for token in ("nope", negative):
        with pytest.raises(grpc.aio.AioRpcError) as forged:
            await client.list_notifications(notifications_pb2.ListNotificationsRequest(page_token=token))
        assert forged.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token is not a token this method gave out" in (forged.value.details() or ""), token


async def test_a_caller_pinned_to_the_version_before_paging_gets_the_first_page(
    channel: grpc.aio.Channel, sent: list[Notification]
) -> None:
    """It cannot ask for more (its schema has no token), and never gets the unbounded list."""
    old = V1Client(channel, metadata=READER)
    answer = await old.list_notifications(v1_pb2.ListNotificationsRequest())
    assert [i.id for i in answer.items] == [n.id for n in sent[:DEFAULT_PAGE_SIZE]]
