"""The notifications module's messages."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
"""At most this many notifications per answer: with each notification well under 1 KB, a page
stays far below the 4 MB message limit however many there are."""


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
    """One page of the notifications sent, oldest first, optionally only those for one user.

    ``page_size``: how many (0: the default of 50; at most 100). ``page_token``: the
    ``next_page_token`` of the previous page, to get the one after it.
    """

    user_id: str = ""
    page_size: Annotated[int, Field(ge=0, le=MAX_PAGE_SIZE)] = 0
    page_token: Annotated[str, Field(max_length=64)] = ""


class WatchNotifications(BaseModel):
    """Watch notifications as they are sent, from now on; optionally only those for one user."""

    user_id: str = ""


class Notifications(BaseModel):
    """A page of notifications; ``next_page_token`` is empty on the last page."""

    items: list[Notification]
    next_page_token: str = ""
