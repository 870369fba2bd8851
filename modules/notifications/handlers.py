"""Handlers and subscribers of the notifications module."""

import uuid
from datetime import UTC, datetime

from modules.notifications._sent import sent_log
from modules.notifications.models import ListNotifications, Notification, Notifications, UserCreated
from runtime import GlobalContext, LocalContext, handler, subscriber


@subscriber("users.created", group="notifications")
async def welcome(event: UserCreated, gctx: GlobalContext) -> None:
    """Welcome a new user. Redelivered events for the same user are sent once."""
    greeting = f"Welcome, {event.given_name}!" if event.given_name else "Welcome!"
    await sent_log().add(
        Notification(
            id=uuid.uuid4().hex,
            user_id=event.id,
            email=event.email,
            message=greeting,
            created_at=datetime.now(UTC),
        )
    )


@handler
async def list_notifications(req: ListNotifications, lctx: LocalContext, gctx: GlobalContext) -> Notifications:
    return Notifications(items=await sent_log().list(req.user_id))
