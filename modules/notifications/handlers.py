"""Handlers and subscribers of the notifications module."""

import uuid

from modules.notifications.models import ListNotifications, Notification, Notifications, UserCreated
from runtime import GlobalContext, LocalContext, handler, subscriber

# Sent notifications, per worker process (a real module would hand them to a mail service).
_SENT: list[Notification] = []


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


@handler
async def list_notifications(req: ListNotifications, lctx: LocalContext, gctx: GlobalContext) -> Notifications:
    items = [n for n in _SENT if not req.user_id or n.user_id == req.user_id]
    return Notifications(items=items)
