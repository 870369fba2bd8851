"""Lifecycle properties through a real worker: request ids, failure isolation, deadlines.

Every example is real gRPC calls to a ``probe`` worker on 127.0.0.1 port 0 (the test-only
module in ``tests/fixtures/worker_modules``). The worker is started once per test and shared
by that test's examples, which is why the function-scoped-fixture health check is suppressed:
no example changes the worker, each only sends calls with ids of its own. What a handler saw
(start, cancellation, cleanup, catch hook) is read from the probe module's ``SEEN`` record.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.identity import is_valid_request_id
from runtime.worker import Worker
from tests.conftest import PROBE_MODULES_DIR, Dial, StartWorker
from tests.fixtures.worker_modules.probe.handlers import SEEN
from tests.fixtures.worker_modules.probe_client import ProbeClient

SHARED_WORKER = [HealthCheck.function_scoped_fixture]
"""One worker per test, shared by its examples (see the module docstring)."""

ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
_serial = itertools.count()

valid_ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=100)
"""Well-formed ids (made unique per call below by a numeric suffix, still well formed)."""
invalid_ids = st.one_of(
    st.tuples(
        st.text(alphabet=ID_ALPHABET, min_size=1, max_size=20),
        st.sampled_from(list(" !\"#$%&'()*+,/;<=>?@[\\]^`{|}~")),
        st.text(alphabet=ID_ALPHABET, min_size=1, max_size=20),
    ).map("".join),
    st.text(alphabet=ID_ALPHABET, min_size=129, max_size=160),
)
"""Ids a caller may send that are not well formed: a stray character, or too long."""


class AuditTail:
    """Reads the store's audit stream incrementally, indexing records by request id."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._after = 0
        self.by_id: dict[str, list[dict[str, Any]]] = {}

    async def wait_for(self, request_ids: set[str], within: float = 5.0) -> None:
        give_up = time.monotonic() + within
        while not request_ids <= self.by_id.keys():
            assert time.monotonic() < give_up, (
                f"no audit record for {request_ids - self.by_id.keys()}"
            )
            for seq, record in await self._store.read("audit", after=self._after, limit=1000):
                self._after = seq
                self.by_id.setdefault(record["request_id"], []).append(record)
            await asyncio.sleep(0.01)


@dataclass
class Probe:
    """A running probe worker, a client of it, and what the test's examples have seen so far."""

    worker: Worker
    client: ProbeClient
    audit: AuditTail
    generated_ids: set[str] = field(default_factory=set)
    """Request ids the worker generated, over every example of the test."""


@pytest.fixture
async def probe(start_worker: StartWorker, dial: Dial) -> AsyncIterator[Probe]:
    worker = await start_worker("probe", modules_dir=PROBE_MODULES_DIR)
    assert worker.service is not None
    async with dial(worker) as channel:
        client = ProbeClient(channel, worker.service.catalog.latest.descriptor)
        yield Probe(worker, client, AuditTail(worker.store))


async def outcome(
    client: ProbeClient,
    method: str,
    fields: dict[str, Any],
    metadata: list[tuple[str, str]],
    timeout: float | None = 10,
) -> tuple[grpc.StatusCode, dict[str, Any] | None, str, str]:
    """(status code, reply or None, details, the x-request-id the worker sent back)."""
    stub = client.call(method, fields, metadata=metadata, timeout=timeout)
    try:
        reply, call = await stub
    except grpc.aio.AioRpcError as error:
        returned = dict(error.trailing_metadata() or ()).get("x-request-id", "")
        return error.code(), None, error.details() or "", str(returned)
    returned = dict(await call.trailing_metadata() or ()).get("x-request-id", "")
    return grpc.StatusCode.OK, reply, "", str(returned)


async def eventually(check: Any, within: float = 3.0) -> None:
    give_up = time.monotonic() + within
    while not check():
        assert time.monotonic() < give_up, "condition not reached in time"
        await asyncio.sleep(0.01)


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED_WORKER)
@given(
    batch=st.lists(
        st.tuples(
            st.one_of(
                st.none(),
                valid_ids.map(lambda v: (v, True)),
                invalid_ids.map(lambda v: (v, False)),
            ),
            st.sampled_from(["Echo", "Fail"]),
        ),
        min_size=1,
        max_size=6,
    )
)
async def test_every_request_gets_a_unique_id_and_completes_its_lifecycle(
    probe: Probe, batch: list[tuple[tuple[str, bool] | None, str]]
) -> None:
    """Property 3: Every request gets a unique request id and completes its whole lifecycle.

    A well-formed ``x-request-id`` from the caller is kept; a missing or malformed one is
    replaced by a fresh one, never seen before. Either way the id comes back in the initial
    metadata, is the id the handler saw in ``lctx.meta``, and the audit record of that id runs
    from ``lifecycle_start`` to ``lifecycle_end`` with the cleanup in between. Calls of one
    example run concurrently and half of them may fail.
    """
    client, tail, generated = probe.client, probe.audit, probe.generated_ids

    sent: list[tuple[str | None, bool, str]] = []
    for given_id, method in batch:
        caller_id, well_formed = given_id if given_id is not None else (None, False)
        if well_formed:
            caller_id = f"{caller_id}-{next(_serial)}"
        sent.append((caller_id, well_formed, method))
    results = await asyncio.gather(
        *(
            outcome(
                client,
                method,
                {"text": "hi"} if method == "Echo" else {"detail": "on purpose"},
                [("x-request-id", caller_id)] if caller_id is not None else [],
            )
            for caller_id, _, method in sent
        )
    )
    returned_ids = []
    for (caller_id, well_formed, method), (code, reply, _, returned) in zip(
        sent, results, strict=True
    ):
        assert is_valid_request_id(returned)
        if well_formed:
            assert returned == caller_id
        else:
            assert returned != caller_id and returned not in generated
            generated.add(returned)
        if method == "Echo":
            assert code == grpc.StatusCode.OK and reply is not None
            assert reply["request_id"] == returned  # what the handler saw in lctx.meta
        else:
            assert code == grpc.StatusCode.INTERNAL
        assert returned in SEEN["started"] and returned in SEEN["cleaned"]
        returned_ids.append(returned)
    assert len(set(returned_ids)) == len(returned_ids)

    await tail.wait_for(set(returned_ids))
    for request_id in returned_ids:
        (record,) = tail.by_id[request_id]
        kinds = [e["kind"] for e in record["events"]]
        assert kinds[0] == "lifecycle_start" and kinds[-1] == "lifecycle_end"
        assert "handler_start" in kinds and "cleanup" in kinds
        assert all(e["request_id"] == request_id for e in record["events"])


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED_WORKER)
@given(
    calls=st.lists(
        st.one_of(
            st.tuples(st.just("Fail"), st.text(min_size=0, max_size=30)),
            st.tuples(st.just("Echo"), st.floats(min_value=0, max_value=0.02)),
        ),
        min_size=2,
        max_size=10,
    ).filter(lambda cs: {m for m, _ in cs} == {"Echo", "Fail"})
)
async def test_a_raising_handler_fails_only_its_own_request(
    probe: Probe, calls: list[tuple[str, Any]]
) -> None:
    """Property 6: A raising handler runs its catch hooks and fails only its own request.

    Failing and succeeding calls run concurrently on one worker: each failing one gets INTERNAL
    with the generic message and has the module's catch hook run for it; every other call
    answers normally and no catch hook runs for it.
    """
    client = probe.client
    ids = [f"p6-{next(_serial)}" for _ in calls]
    results = await asyncio.gather(
        *(
            outcome(
                client,
                method,
                {"detail": arg} if method == "Fail" else {"text": request_id, "delay": arg},
                [("x-request-id", request_id)],
            )
            for request_id, (method, arg) in zip(ids, calls, strict=True)
        )
    )
    for request_id, (method, _), (code, reply, details, _) in zip(ids, calls, results, strict=True):
        if method == "Fail":
            assert code == grpc.StatusCode.INTERNAL
            assert details == f"internal error (request id {request_id})"
            assert request_id in SEEN["caught"]
        else:
            assert code == grpc.StatusCode.OK and reply == {
                "text": request_id,
                "request_id": request_id,
            }
            assert request_id not in SEEN["caught"]
        assert request_id in SEEN["cleaned"]


@settings(max_examples=20, deadline=None, suppress_health_check=SHARED_WORKER)
@given(
    client_timeout=st.one_of(st.none(), st.floats(min_value=0.02, max_value=0.25)),
    sleep=st.floats(min_value=5.0, max_value=30.0),
)
async def test_a_handler_past_its_deadline_is_cancelled_and_cleaned_up(
    probe: Probe, client_timeout: float | None, sleep: float
) -> None:
    """Property 8: A handler past its deadline is cancelled, its cleanup runs, and the caller
    gets DEADLINE_EXCEEDED.

    The deadline is the caller's (``timeout=``) or, without one, the method's policy timeout
    (0.3 s for ``probe.Stall``). Each example waits out a real deadline, so 20 examples keep
    the test to a few seconds; the input space is two numbers.
    """
    client = probe.client
    request_id = f"p8-{next(_serial)}"
    started = time.monotonic()
    code, _, details, _ = await outcome(
        client, "Stall", {"seconds": sleep}, [("x-request-id", request_id)], timeout=client_timeout
    )
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    # Cancelled, not slept through: every sleep is 5 s or more, the deadlines 0.3 s or less (the
    # margin is for a loaded machine, not a bound on speed).
    assert time.monotonic() - started < 4.0
    if client_timeout is None:
        assert details == "probe.Stall: deadline exceeded"  # the worker's own verdict
    await eventually(lambda: request_id in SEEN["cleaned"], within=10.0)
    assert request_id in SEEN["cancelled"]
    await probe.audit.wait_for({request_id})
    (record,) = probe.audit.by_id[request_id]
    assert record["outcome"] == "DEADLINE_EXCEEDED"
    cleanups = [e for e in record["events"] if e["kind"] == "cleanup"]
    assert [e["error"] for e in cleanups] == [None]  # ran to the end, not cut short
