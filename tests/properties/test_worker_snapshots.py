"""Stored snapshots through a real users worker, read back from the manifest store.

The users worker runs on 127.0.0.1 port 0 with its store in a temporary SQLite file; neither
users method asks for snapshots in its policy, so a snapshot is stored only when the caller's
``x-flags`` carries ``snapshot``. The worker is shared by the examples of the test (hence the
suppressed function-scoped-fixture health check); each example is one real call.
(``orders.PlaceOrder``, whose policy says ``snapshot = true``, is covered in
``tests/integration/test_worker_sagas.py``.)
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import grpc.aio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gen.users.v2025_06_01 import users_pb2
from gen.users.v2025_06_01.client import UsersClient
from runtime.config import Settings
from runtime.lcc import LogSnapshotStore
from runtime.worker import Worker
from tests.conftest import SNAPSHOT_ROLES, Dial, StartWorker

_serial = itertools.count()

other_flags = st.sampled_from(["debug", "trace", "dry-run", "snap", "snapshots", "nosnapshot"])
snapshot_flag = st.sampled_from(["snapshot", "Snapshot", "SNAPSHOT"])
separators = st.sampled_from([",", ", ", " ", " , "])


@dataclass
class Users:
    worker: Worker
    client: UsersClient
    snapshots: LogSnapshotStore
    user_id: str


@pytest.fixture
async def users(
    start_worker: StartWorker, worker_settings: Callable[..., Settings], dial: Dial
) -> AsyncIterator[Users]:
    worker = await start_worker("users", settings=worker_settings(auth=SNAPSHOT_ROLES))
    async with dial(worker) as channel:
        client = UsersClient(channel)
        user = await client.create_user(
            users_pb2.CreateUserRequest(
                given_name="Ada", email=f"snap-{uuid.uuid4().hex[:12]}@example.com"
            ),
            timeout=5,
        )
        yield Users(worker, client, LogSnapshotStore(worker.store), user.id)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flags=st.lists(other_flags, max_size=3),
    with_snapshot=st.booleans(),
    position=st.integers(min_value=0, max_value=3),
    separator=separators,
    snapshot_spelling=snapshot_flag,
    known_user=st.booleans(),
)
async def test_a_snapshot_is_stored_exactly_when_the_caller_flags_it(
    users: Users,
    flags: list[str],
    with_snapshot: bool,
    position: int,
    separator: str,
    snapshot_spelling: str,
    known_user: bool,
) -> None:
    """Property 44: Snapshots are stored.

    A ``users.GetUser`` call stores one snapshot, readable from the store's ``snapshots``
    stream, iff its ``x-flags`` lists ``snapshot`` (in any case, among other flags); the
    stored snapshot is that request's, whether the call succeeded or failed.
    """
    if with_snapshot:
        flags = [*flags[:position], snapshot_spelling, *flags[position:]]
    request_id = f"p44-{next(_serial)}"
    user_id = users.user_id if known_user else f"missing-{request_id}"
    metadata = [("x-request-id", request_id)]
    if flags:
        metadata.append(("x-flags", separator.join(flags)))
    before = set(await users.snapshots.list("users.GetUser"))

    try:
        reply = await users.client.get_user(
            users_pb2.GetUserRequest(id=user_id), metadata=metadata, timeout=5
        )
        assert known_user and reply.id == user_id
    except grpc.aio.AioRpcError as error:
        assert not known_user and error.code() == grpc.StatusCode.NOT_FOUND

    new = set(await users.snapshots.list("users.GetUser")) - before
    if not with_snapshot:
        assert new == set()
        return
    (snapshot_id,) = new
    snapshot = await users.snapshots.load(snapshot_id)
    assert snapshot.request_id == request_id
    assert snapshot.request == {"id": user_id}
    assert snapshot.version == "2025-06-01"
    assert "snapshot" in snapshot.meta["flags"]
    kinds = [e.kind for e in snapshot.events]
    assert kinds[0] == "lifecycle_start" and kinds[-1] == "lifecycle_end"
    assert ("handler_error" in kinds) == (not known_user)
