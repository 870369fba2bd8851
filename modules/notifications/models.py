"""The notifications module's messages."""

from datetime import datetime

from pydantic import BaseModel


class UserCreated(BaseModel):
    """The ``users.created`` event, as far as notifications cares."""

    id: str
    email: str
    given_name: str = ""


class Notification(BaseModel):
    id: str
    user_id: str
    email: str
    message: str
    created_at: datetime


class ListNotifications(BaseModel):
    """Notifications sent, optionally only those for one user."""

    user_id: str = ""


class Notifications(BaseModel):
    items: list[Notification]
