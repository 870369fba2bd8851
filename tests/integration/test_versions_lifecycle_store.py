"""The version lifecycle against the real manifest store, on SQLite and on PostgreSQL.

Two store instances opened on one URL stand for two gateways: each flushes its own counters, and
whatever reads the store afterwards sees their sum. PostgreSQL runs in a fresh schema per test,
dropped afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from runtime.errors import InvalidArgument, NotFound
from runtime.store import ManifestStore, VersionRecord, open_store
from runtime.versions import (
    LifecyclePolicy,
    UsageLedger,
    apply_retirement,
    classify,
    is_retired,
    promote,
    record_usage,
    refresh_states,
    retirement_plan,
    set_override,
    state_of,
)
from runtime.versions._lifecycle import DAY
from tests.services import require_postgres

NOW = 1_750_000_000.0


@pytest.fixture(params=["sqlite", "postgresql"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    base = require_postgres()
    schema = f"modrpc_test_{secrets.token_hex(6)}"
    yield f"{base}?schema={schema}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def store(url: str) -> AsyncIterator[ManifestStore]:
    async with open_store(url) as opened:
        yield opened


def version(version_id: str, age_days: float, *labels: str, **metadata: Any) -> VersionRecord:
    return VersionRecord(
        id=version_id,
        created_at=NOW - age_days * DAY,
        schema={"module": "users"},
        fingerprint=f"sha256:{version_id}",
        manifest={"handlers": []},
        labels=labels,
        metadata={"descriptor": f"descriptor of {version_id}", **metadata},
    )


async def seed(store: ManifestStore) -> None:
    """Four versions of users: old and idle, old and protected, recent, and the newest."""
    await store.put_version("users", version("2024-01-01", 400))
    await store.put_version("users", version("2024-06-01", 300, "stable"))
    await store.put_version("users", version("2025-01-15", 150))
    await store.put_version("users", version("2025-06-01", 10, "latest"))


async def test_usage_flushed_by_two_gateways_is_combined(url: str) -> None:
    async with open_store(url) as gateway_a, open_store(url) as gateway_b:
        await seed(gateway_a)
        assert (
            await record_usage(gateway_a, "users", {"2025-06-01": 60, "2025-01-15": 1}, NOW - 30)
            is not None
        )
        assert await record_usage(gateway_b, "users", {"2025-06-01": 45}, NOW - 20) is not None
        assert await record_usage(gateway_b, "users", {"2025-01-15": 0}, NOW - 10) is None

        async with open_store(url) as reader:
            ledger = UsageLedger("users")
            assert await ledger.refresh(reader) == 2
            usage = ledger.usage()
    assert usage["2025-06-01"].calls_since(NOW - 300) == 105
    assert usage["2025-06-01"].last_seen == NOW - 20
    # Neither gateway saw 100 calls alone; together they did.
    assert classify(usage, now=NOW) == {"2025-06-01": "hot", "2025-01-15": "warm"}


async def test_a_ledger_reads_only_what_was_appended_since_its_last_refresh(
    store: ManifestStore,
) -> None:
    ledger = UsageLedger("users")
    await record_usage(store, "users", {"a": 1}, NOW - 3)
    await record_usage(store, "orders", {"x": 9}, NOW - 3)
    assert await ledger.refresh(store, page=1) == 1
    await record_usage(store, "users", {"a": 2}, NOW - 2)
    await record_usage(store, "users", {"b": 4}, NOW - 1)
    assert await ledger.refresh(store, page=1) == 2
    assert await ledger.refresh(store) == 0
    assert {v: u.calls_since(0) for v, u in ledger.usage().items()} == {"a": 3, "b": 4}


async def test_bad_counts_are_refused_before_anything_is_written(store: ManifestStore) -> None:
    with pytest.raises(InvalidArgument, match="2025-06-01"):
        await record_usage(store, "users", {"2025-01-15": 3, "2025-06-01": -1}, NOW)
    assert await store.read("usage:users") == []


async def test_a_request_to_a_cold_version_promotes_it_to_warm(url: str) -> None:
    async with open_store(url) as gateway, open_store(url) as other:
        await seed(gateway)
        assert (await refresh_states(gateway, "users", now=NOW))["2025-01-15"] == "cold"
        assert state_of((await other.get_version("users", "2025-01-15")).metadata) == "cold"

        assert await promote(gateway, "users", "2025-01-15", now=NOW) == "warm"

        record = await other.get_version("users", "2025-01-15")
        assert record.metadata["state"] == "warm"
        assert record.metadata["descriptor"] == "descriptor of 2025-01-15"
        assert record.labels == ()
        # A classification by another process, a day later, still sees it warm.
        states = await refresh_states(other, "users", now=NOW + DAY)
        assert states["2025-01-15"] == "warm"
        # Promoting a warm version again records the call but writes no state.
        assert await promote(other, "users", "2025-01-15", now=NOW + 1) == "warm"


async def test_a_retired_version_cannot_be_promoted_and_is_refused_as_retired(
    store: ManifestStore,
) -> None:
    await store.put_version("users", version("2024-01-01", 400, state="retired"))
    with pytest.raises(NotFound, match="'2024-01-01' is retired"):
        await promote(store, "users", "2024-01-01", now=NOW)
    with pytest.raises(NotFound, match="2030-01-01"):
        await promote(store, "users", "2030-01-01", now=NOW)
    assert await store.read("usage:users") == []


async def test_refreshing_states_writes_only_the_states_that_changed(store: ManifestStore) -> None:
    await seed(store)
    await record_usage(store, "users", {"2025-06-01": 150}, NOW - 5)
    first = await refresh_states(store, "users", now=NOW)
    assert first == {
        "2024-01-01": "cold", "2024-06-01": "cold", "2025-01-15": "cold", "2025-06-01": "hot",
    }  # fmt: skip
    async with store.watch() as events:
        assert await refresh_states(store, "users", now=NOW + 1) == first
        later = await refresh_states(store, "users", now=NOW + 600)
        assert later["2025-06-01"] == "warm"
        seen = [await asyncio.wait_for(anext(events), 10.0)]
        with pytest.raises(TimeoutError):  # and nothing else was written
            seen.append(await asyncio.wait_for(anext(events), 0.5))
    assert [(e.kind, e.key) for e in seen] == [("version", "2025-06-01")]
    assert (await store.get_version("users", "2025-06-01")).metadata["state"] == "warm"


async def test_a_dry_run_plans_without_writing_and_applying_retires_the_idle_version(
    store: ManifestStore,
) -> None:
    await seed(store)
    await record_usage(store, "users", {"2025-01-15": 1}, NOW - 3 * DAY)
    before = [v.to_json() for v in await store.list_versions("users")]

    plan = await retirement_plan(store, "users", now=NOW)

    assert [v.to_json() for v in await store.list_versions("users")] == before
    assert plan.to_retire == ("2024-01-01",)
    reasons = {d.version: d.reason for d in plan.decisions}
    assert reasons == {
        "2024-01-01": "cold: never called for 400.0 days, longer than 30.0 days",
        "2024-06-01": "protected by label 'stable'; move the label to retire it",
        "2025-01-15": "warm: still in use",
        "2025-06-01": "protected by label 'latest'; move the label to retire it",
    }

    done = await apply_retirement(store, "users", plan, now=NOW + 5)

    assert [(d.version, d.retire, d.state) for d in done] == [("2024-01-01", True, "retired")]
    retired = await store.get_version("users", "2024-01-01")
    assert is_retired(retired.metadata)
    assert retired.metadata["retired_at"] == NOW + 5
    assert retired.metadata["retired_reason"] == reasons["2024-01-01"]
    assert retired.metadata["descriptor"] == "descriptor of 2024-01-01"
    others = [v.to_json() for v in await store.list_versions("users") if v.id != "2024-01-01"]
    assert others == [v for v in before if v["id"] != "2024-01-01"]
    # Applying the same plan again finds nothing left to do.
    again = await apply_retirement(store, "users", plan)
    assert [(d.version, d.retire, d.reason) for d in again] == [
        ("2024-01-01", False, "skipped: already retired")
    ]


async def test_overrides_keep_retire_and_restore(store: ManifestStore) -> None:
    await seed(store)
    await set_override(store, "users", "2024-01-01", "keep")
    await set_override(store, "users", "2025-01-15", "retire")
    await set_override(store, "users", "2024-06-01", "retire")  # protected: never applied

    plan = await retirement_plan(store, "users", now=NOW)
    assert plan.to_retire == ("2025-01-15",)
    await apply_retirement(store, "users", plan)
    assert is_retired((await store.get_version("users", "2025-01-15")).metadata)
    assert not is_retired((await store.get_version("users", "2024-06-01")).metadata)

    # Keeping a retired version is how a retirement is undone.
    restored = await set_override(store, "users", "2025-01-15", "keep")
    assert restored.metadata == {
        "descriptor": "descriptor of 2025-01-15",
        "override": "keep",
        "state": "cold",
    }
    assert await store.get_version("users", "2025-01-15") == restored
    # Clearing the keep lets the idle version retire at the next pass.
    await set_override(store, "users", "2024-01-01", None)
    assert (await retirement_plan(store, "users", now=NOW)).to_retire == ("2024-01-01",)


async def test_pending_overrides_change_a_dry_run_plan_but_not_the_store(
    store: ManifestStore,
) -> None:
    await seed(store)
    before = [v.to_json() for v in await store.list_versions("users")]
    plan = await retirement_plan(
        store, "users", now=NOW, overrides={"2024-01-01": "keep", "2025-01-15": "retire"}
    )
    assert plan.to_retire == ("2025-01-15",)
    assert [v.to_json() for v in await store.list_versions("users")] == before
    with pytest.raises(NotFound, match="2030-01-01"):
        await retirement_plan(store, "users", now=NOW, overrides={"2030-01-01": "keep"})


async def test_apply_skips_a_version_that_gained_a_protected_label_after_the_plan(
    store: ManifestStore,
) -> None:
    await seed(store)
    await store.put_version("users", version("2023-01-01", 500))
    plan = await retirement_plan(store, "users", now=NOW)
    assert plan.to_retire == ("2023-01-01", "2024-01-01", "2025-01-15")

    await store.set_label("users", "stable", "2024-01-01")
    await set_override(store, "users", "2023-01-01", "keep")
    done = await apply_retirement(store, "users", plan)

    assert {d.version: (d.retire, d.reason) for d in done} == {
        "2023-01-01": (False, "skipped: now kept by a manual override"),
        "2024-01-01": (False, "skipped: now protected by label 'stable'"),
        "2025-01-15": (True, "cold: never called for 150.0 days, longer than 30.0 days"),
    }
    retired = [v.id for v in await store.list_versions("users") if is_retired(v.metadata)]
    assert retired == ["2025-01-15"]
    assert await store.labels("users") == {"latest": "2025-06-01", "stable": "2024-01-01"}


async def test_the_policy_decides_how_long_idle_is(store: ManifestStore) -> None:
    await seed(store)
    strict = LifecyclePolicy(idle_after=100 * DAY, protected_labels=("latest",))
    plan = await retirement_plan(store, "users", now=NOW, policy=strict)
    assert plan.to_retire == ("2024-01-01", "2024-06-01", "2025-01-15")


async def test_a_long_lived_ledger_reads_on_from_its_cursor_and_must_fit_the_policy(
    store: ManifestStore,
) -> None:
    await seed(store)
    ledger = UsageLedger("users")
    await record_usage(store, "users", {"2025-01-15": 1}, NOW - 10)
    assert (await refresh_states(store, "users", now=NOW, ledger=ledger))["2025-01-15"] == "warm"
    cursor = ledger.cursor
    await record_usage(store, "users", {"2024-01-01": 200}, NOW - 5)

    plan = await retirement_plan(store, "users", now=NOW, ledger=ledger)

    assert ledger.cursor > cursor
    assert {d.version: d.state for d in plan.decisions}["2024-01-01"] == "hot"
    with pytest.raises(InvalidArgument, match="'orders'"):
        await refresh_states(store, "orders", now=NOW, ledger=ledger)
    with pytest.raises(InvalidArgument, match="hot window"):
        await retirement_plan(store, "users", now=NOW, ledger=UsageLedger("users", horizon=10))
