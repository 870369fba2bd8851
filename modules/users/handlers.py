"""Handlers of the users module."""

import uuid
from datetime import datetime

from modules.users._repo import repository
from modules.users.models import CreateUser, GetUser, User
from runtime import GlobalContext, LocalContext, handler
from runtime.errors import AlreadyExists, NotFound


def _user(row: dict[str, str]) -> User:
    return User(
        id=row["id"],
        given_name=row["given_name"],
        family_name=row["family_name"],
        email=row["email"],
        created_at=datetime.fromisoformat(row["created_at"]),
    )


@handler
async def create_user(req: CreateUser, lctx: LocalContext, gctx: GlobalContext) -> User:
    """Create a user and announce it on ``users.created``; a taken email is ALREADY_EXISTS.

    The event is published first and saved with the user, in one transaction (the outbox):
    a user is never saved without its event, and the event never goes out without the user,
    whatever the fabric is doing at the time.
    """
    row = {
        "id": uuid.uuid4().hex,
        "given_name": req.given_name,
        "family_name": req.family_name,
        "email": str(req.email),
        "created_at": gctx.clock.now().isoformat(),
    }
    user = _user(row)
    await gctx.publish("users.created", user, msg_id=f"users.created:{user.id}")
    if not await repository().insert(row, events=gctx.outbox()):
        raise AlreadyExists(f"a user with email {req.email} already exists")
    return user


@handler
async def get_user(req: GetUser, lctx: LocalContext, gctx: GlobalContext) -> User:
    """Read one user; an unknown id is NOT_FOUND."""
    row = await repository().get(req.id)
    if row is None:
        raise NotFound(f"no user with id {req.id!r}")
    return _user(row)
