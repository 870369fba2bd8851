"""Handlers and subscribers of the notifications module."""

import base64
import binascii
import uuid

from modules.notifications.models import (
    DEFAULT_PAGE_SIZE,
    ListNotifications,
    Notification,
    Notifications,
    UserCreated,
)
from runtime import GlobalContext, LocalContext, handler, subscriber
from runtime.errors import InvalidArgument

# Sent notifications, per worker process, oldest first (a real module would hand them to a mail
# service). Only ever appended to, so a position in it stays valid across pages.
_SENT: list[Notification] = []
_TOKEN_PREFIX = "after:"


@subscriber("users.created", group="notifications")
async def welcome(event: UserCreated, gctx: GlobalContext) -> None:
    """Welcome a new user. Redelivered events for the same user are sent once."""
    if any(n.user_id == event.id for n in _SENT):
        return
    greeting = f"Welcome, {event.given_name}!" if event.given_name else "Welcome!"
    _SENT.append(
        Notification(
            id=uuid.uuid4().hex,
            user_id=event.id,
            email=event.email,
            message=greeting,
            created_at=gctx.clock.now(),
        )
    )


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
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument(
            "page_token is not a token this method gave out; send the next_page_token of the "
            "previous page, or none for the first page"
        ) from None
    if not 0 <= position <= len(_SENT):
        raise InvalidArgument("page_token is past the end of the notifications")
    return position


@handler
async def list_notifications(req: ListNotifications, lctx: LocalContext, gctx: GlobalContext) -> Notifications:
    """One page of notifications. Callers pinned to the version before paging existed send no
    page_size, so they get the first page of the default size, never the whole list."""
    size = req.page_size or DEFAULT_PAGE_SIZE
    items: list[Notification] = []
    position = _position(req.page_token)
    while position < len(_SENT) and len(items) < size:
        notification = _SENT[position]
        position += 1
        if not req.user_id or notification.user_id == req.user_id:
            items.append(notification)
    more = any(not req.user_id or n.user_id == req.user_id for n in _SENT[position:])
    return Notifications(items=items, next_page_token=_page_token(position) if more else "")
