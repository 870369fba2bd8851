"""Handlers and subscribers of the notifications module.

``welcome`` runs once per new user (a competing-consumer group) and publishes what it sent on
``notifications.sent``; every worker of the module hears that topic (no group) and hands each
notification to the callers of ``WatchNotifications`` it serves, so a watcher sees every
notification whichever worker sent it.
"""

import asyncio
import base64
import binascii
import uuid
from collections.abc import AsyncIterator

from modules.notifications._sent import sent_log
from modules.notifications.models import (
    DEFAULT_PAGE_SIZE,
    ListNotifications,
    Notification,
    Notifications,
    UserCreated,
    WatchNotifications,
)
from runtime import GlobalContext, LocalContext, handler, subscriber
from runtime.errors import InvalidArgument, ResourceExhausted

_TOKEN_PREFIX = "after:"


WATCH_BACKLOG = 256
"""Notifications one watcher may fall behind by; past it the watch ends RESOURCE_EXHAUSTED (the
caller watches again) rather than holding notifications for it without bound."""


class _Watchers:
    """The open watches of this worker, each with a bounded queue of notifications to send."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Notification | None]] = set()

    def open(self) -> asyncio.Queue[Notification | None]:
        queue: asyncio.Queue[Notification | None] = asyncio.Queue(WATCH_BACKLOG)
        self._queues.add(queue)
        return queue

    def close(self, queue: asyncio.Queue[Notification | None]) -> None:
        self._queues.discard(queue)

    def send(self, notification: Notification) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(notification)
            except asyncio.QueueFull:  # too far behind: its watch ends (None), others go on
                self._queues.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)


_WATCHERS = _Watchers()


@subscriber("users.created", group="notifications")
async def welcome(event: UserCreated, gctx: GlobalContext) -> None:
    """Welcome a new user. Redelivered events for the same user are sent once (the sent log,
    shared by every worker of the module, keeps one welcome per user), and the welcome and its
    ``notifications.sent`` are saved in one transaction: a crash between the two cannot leave a
    welcome recorded whose event never goes out."""
    greeting = f"Welcome, {event.given_name}!" if event.given_name else "Welcome!"
    notification = Notification(
        id=uuid.uuid4().hex,
        user_id=event.id,
        email=event.email,
        message=greeting,
        created_at=gctx.clock.now(),
    )
    await gctx.publish("notifications.sent", notification, msg_id=f"notifications.sent:{notification.id}")
    if not await sent_log().add_first(notification, events=gctx.outbox()):
        gctx.outbox().discard()  # welcomed already (a redelivery): nothing new to announce


@subscriber("notifications.sent")
async def sent(notification: Notification, gctx: GlobalContext) -> None:
    """Every worker of the module hears each notification sent and passes it to its watchers."""
    _WATCHERS.send(notification)


@handler
async def watch_notifications(
    req: WatchNotifications, lctx: LocalContext, gctx: GlobalContext
) -> AsyncIterator[Notification]:
    """Each notification as it is sent, from now until the caller hangs up (or its deadline)."""
    queue = _WATCHERS.open()
    try:
        while True:
            notification = await queue.get()
            if notification is None:
                raise ResourceExhausted(
                    f"this watch fell more than {WATCH_BACKLOG} notifications behind; watch again"
                )
            if not req.user_id or notification.user_id == req.user_id:
                yield notification
    finally:
        _WATCHERS.close(queue)


def _page_token(position: int) -> str:
    """An opaque token for "the notifications after ``position``" (callers must not parse it)."""
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{position}".encode()).decode()


def _position(token: str) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if not text.startswith(_TOKEN_PREFIX):
            raise ValueError(text)
        position = int(text[len(_TOKEN_PREFIX) :])
        if position < 0:  # never given out
            raise ValueError(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument(
            "page_token is not a token this method gave out; send the next_page_token of the "
            "previous page, or none for the first page"
        ) from None
    return position


@handler
async def list_notifications(req: ListNotifications, lctx: LocalContext, gctx: GlobalContext) -> Notifications:
    """One page of notifications. Callers pinned to the version before paging existed send no
    page_size, so they get the first page of the default size, never the whole list."""
    log = sent_log()
    position = _position(req.page_token)
    if position > await log.last():
        raise InvalidArgument("page_token is past the end of the notifications")
    items, position, more = await log.page(req.user_id, after=position, size=req.page_size or DEFAULT_PAGE_SIZE)
    return Notifications(items=items, next_page_token=_page_token(position) if more else "")
