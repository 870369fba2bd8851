"""The lifecycle's dry run and retirement against a real SQLite manifest store.

SPEC §8 numbers no property for the lifecycle; these pin SPEC §4 "Lifecycle": "Idle versions are
retired automatically: tags such as ``stable`` protect a version, manual keep and retire
overrides are honoured, and a dry run is available."
"""

from __future__ import annotations

import tempfile
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from runtime.store import ManifestStore, VersionRecord, open_store
from runtime.versions import apply_retirement, is_retired, record_usage, retirement_plan
from runtime.versions._lifecycle import DAY

NOW = 1_750_000_000.0
IDS = ["2024-01-01", "2024-06-01", "2025-01-15", "2025-06-01", "tsv:1750000000-users-3"]
slot = st.integers(0, len(IDS) - 1)

setups = st.fixed_dictionaries(
    {
        "versions": st.lists(
            st.tuples(
                st.sampled_from(IDS),
                st.sampled_from([0.0, 10 * DAY, 40 * DAY, 400 * DAY]),
                st.sampled_from([None, "keep", "retire"]),
                st.booleans(),  # retired already
            ),
            min_size=2, max_size=5, unique_by=lambda v: v[0],
        ),
        "labels": st.dictionaries(st.sampled_from(["stable", "latest", "v1.2.0"]), slot, max_size=3),
        "usage": st.lists(
            st.tuples(st.sampled_from([1.0, 600.0, 3 * DAY, 60 * DAY]),
                      st.dictionaries(slot, st.integers(0, 300), max_size=3)),
            max_size=4,
        ),
        "pending": st.dictionaries(slot, st.sampled_from([None, "keep", "retire"]), max_size=3),
    }
)  # fmt: skip


async def seed(store: ManifestStore, setup: dict[str, Any]) -> list[str]:
    ids = [v for v, *_ in setup["versions"]]
    labels_of: dict[str, list[str]] = {}
    for label, index in setup["labels"].items():
        labels_of.setdefault(ids[index % len(ids)], []).append(label)
    for version_id, age, override, retired in setup["versions"]:
        metadata: dict[str, Any] = {"descriptor": "kept as is"}
        if override is not None:
            metadata["override"] = override
        if retired:
            metadata.update(state="retired", retired_at=NOW - DAY)
        await store.put_version(
            "users",
            VersionRecord(
                id=version_id, created_at=NOW - age, schema={}, fingerprint="sha256:0",
                manifest={}, labels=tuple(labels_of.get(version_id, ())), metadata=metadata,
            ),
        )  # fmt: skip
    for age, counts in setup["usage"]:
        named = {ids[i % len(ids)]: n for i, n in counts.items()}
        await record_usage(store, "users", named, NOW - age)
    return ids


async def everything(store: ManifestStore) -> tuple[Any, ...]:
    return (
        [v.to_json() for v in await store.list_versions("users")],
        await store.labels("users"),
        await store.read("usage:users", limit=1000),
        await store.modules(),
    )


@settings(max_examples=100, deadline=None)
@given(setup=setups)
async def test_a_dry_run_changes_nothing_in_the_store(setup: dict[str, Any]) -> None:
    """Lifecycle (SPEC §4): a dry run is available.

    Planning against the store, with or without pending overrides, leaves every version, label
    and usage entry exactly as it was.
    """
    with tempfile.TemporaryDirectory() as folder:
        async with open_store(f"sqlite:///{folder}/store.db") as store:
            ids = await seed(store, setup)
            before = await everything(store)
            pending = {ids[i % len(ids)]: o for i, o in setup["pending"].items()}
            await retirement_plan(store, "users", now=NOW, overrides=pending)
            await retirement_plan(store, "users", now=NOW)
            assert await everything(store) == before


@settings(max_examples=100, deadline=None)
@given(setup=setups)
async def test_applying_a_plan_retires_exactly_its_versions_and_changes_nothing_else(
    setup: dict[str, Any],
) -> None:
    """Lifecycle (SPEC §4): idle versions are retired; tags protect a version; keep and retire
    overrides are honoured.

    Applied to an unchanged store, a plan marks exactly ``plan.to_retire`` retired (stamped with
    the time and the plan's reason), never one a protected label points at, one kept by an
    override, or the newest; every other field of every version, and every label, is unchanged.
    """
    with tempfile.TemporaryDirectory() as folder:
        async with open_store(f"sqlite:///{folder}/store.db") as store:
            await seed(store, setup)
            before = {v.id: v for v in await store.list_versions("users")}
            labels = await store.labels("users")
            plan = await retirement_plan(store, "users", now=NOW)
            done = await apply_retirement(store, "users", plan)
            event(f"retired {len(plan.to_retire)} of {len(before)}")
            assert tuple(d.version for d in done if d.retire) == plan.to_retire
            after = {v.id: v for v in await store.list_versions("users")}
            assert await store.labels("users") == labels
            newest = list(before)[-1]
            reasons = {d.version: d.reason for d in plan.decisions}
            for version_id, record in after.items():
                old = before[version_id]
                if version_id in plan.to_retire:
                    assert not is_retired(old.metadata)
                    assert version_id != newest
                    assert not {"stable", "latest"} & set(old.labels)
                    assert old.metadata.get("override") != "keep"
                    assert record.metadata == {
                        **old.metadata, "state": "retired", "retired_at": NOW,
                        "retired_reason": reasons[version_id],
                    }  # fmt: skip
                    assert record.to_json() | {"metadata": None} == old.to_json() | {
                        "metadata": None
                    }
                else:
                    assert record == old
