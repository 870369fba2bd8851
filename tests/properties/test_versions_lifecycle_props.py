"""The version lifecycle's pure decisions against brute-force oracles (SPEC §4 "Lifecycle").

SPEC §8 numbers no property for the lifecycle, so these are tagged with the §4 text they pin:
"Each version is hot, warm or cold according to its recent traffic. A request to a cold version
promotes it to warm. Idle versions are retired automatically: tags such as ``stable`` protect a
version, manual keep and retire overrides are honoured, and a dry run is available."
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.store import VersionRecord
from runtime.versions import UsageLedger, classify, plan_retirement
from runtime.versions._lifecycle import DAY, VersionUsage

NOW = 1_750_000_000.0
IDS = [f"v{i}" for i in range(8)]
RANK = {"cold": 0, "warm": 1, "hot": 2}

# -- usage -------------------------------------------------------------------------------------

ages = st.floats(min_value=0, max_value=10 * DAY, allow_nan=False)
counts = st.dictionaries(st.sampled_from(IDS), st.integers(0, 80), max_size=4)
entries = st.lists(
    st.one_of(
        st.builds(lambda age, c: {"at": NOW - age, "counts": c}, ages, counts),
        st.builds(
            lambda age, s: {"at": NOW - age, "seen": s},
            ages,
            st.lists(st.sampled_from(IDS), max_size=2),
        ),
    ),
    max_size=25,
)
windows = st.tuples(
    st.floats(min_value=1, max_value=DAY, allow_nan=False),
    st.floats(min_value=1, max_value=9 * DAY, allow_nan=False),
).map(lambda w: (w[0], max(w)))
thresholds = st.integers(1, 150)


def fold(documents: list[dict[str, Any]], horizon: float) -> dict[str, VersionUsage]:
    ledger = UsageLedger("users", horizon=horizon)
    ledger.fold(list(enumerate(documents, start=1)))
    return ledger.usage()


def oracle(
    documents: list[dict[str, Any]], hot_window: float, warm_window: float, threshold: int
) -> dict[str, str]:
    """Hot/warm/cold straight from the raw entries."""
    result = {}
    for version in IDS:
        calls = [d["at"] for d in documents if d.get("counts", {}).get(version, 0) > 0]
        recent = sum(
            d["counts"][version]
            for d in documents
            if d["at"] > NOW - hot_window and d.get("counts", {}).get(version, 0) > 0
        )
        touched = calls + [d["at"] for d in documents if version in d.get("seen", [])]
        if not touched:
            continue
        if recent >= threshold:
            result[version] = "hot"
        elif max(touched) > NOW - warm_window:
            result[version] = "warm"
        else:
            result[version] = "cold"
    return result


@settings(max_examples=200, deadline=None)
@given(documents=entries, window=windows, threshold=thresholds)
def test_classification_follows_recent_traffic(
    documents: list[dict[str, Any]], window: tuple[float, float], threshold: int
) -> None:
    """Lifecycle (SPEC §4): each version is hot, warm or cold according to its recent traffic.

    Folded into a ledger whose horizon is the hot window, then classified, every version gets
    what the raw entries say: hot with at least ``threshold`` calls in the hot window, warm with
    any call or promotion in the warm window, cold otherwise.
    """
    hot_window, warm_window = window
    usage = fold(documents, hot_window)
    got = classify(
        usage, now=NOW, hot_window=hot_window, warm_window=warm_window, hot_threshold=threshold
    )
    assert got == oracle(documents, hot_window, warm_window, threshold)


@settings(max_examples=200, deadline=None)
@given(documents=entries, extra=counts, age=ages, window=windows, threshold=thresholds)
def test_more_traffic_never_cools_a_version(
    documents: list[dict[str, Any]],
    extra: dict[str, int],
    age: float,
    window: tuple[float, float],
    threshold: int,
) -> None:
    """Lifecycle (SPEC §4): each version is hot, warm or cold according to its recent traffic.

    Adding calls never moves a version down from hot to warm or from warm to cold.
    """
    hot_window, warm_window = window
    before = classify(
        fold(documents, hot_window),
        now=NOW,
        hot_window=hot_window,
        warm_window=warm_window,
        hot_threshold=threshold,
    )
    more = [*documents, {"at": NOW - age, "counts": extra}]
    after = classify(
        fold(more, hot_window),
        now=NOW,
        hot_window=hot_window,
        warm_window=warm_window,
        hot_threshold=threshold,
    )
    for version, state in before.items():
        assert RANK[after[version]] >= RANK[state]


@settings(max_examples=200, deadline=None)
@given(
    documents=entries,
    version=st.sampled_from(IDS),
    later=st.floats(0, 0.999),  # short of the edge, which rounding at NOW blurs
    window=windows,
)
def test_a_request_to_a_cold_version_promotes_it_to_warm(
    documents: list[dict[str, Any]], version: str, later: float, window: tuple[float, float]
) -> None:
    """Lifecycle (SPEC §4): a request to a cold version promotes it to warm.

    After a promotion at ``NOW`` every classification within the warm window sees the version
    warm at least, whatever its history.
    """
    hot_window, warm_window = window
    promoted = [*documents, {"at": NOW, "seen": [version]}]
    when = NOW + later * warm_window
    usage = fold(promoted, hot_window)
    state = classify(usage, now=when, hot_window=hot_window, warm_window=warm_window)[version]
    assert state in ("warm", "hot")


@settings(max_examples=200, deadline=None)
@given(
    documents=entries, cuts=st.lists(st.integers(0, 25), max_size=4), horizon=st.floats(1, 2 * DAY)
)
def test_folding_in_batches_gives_the_same_usage_as_folding_at_once(
    documents: list[dict[str, Any]], cuts: list[int], horizon: float
) -> None:
    """Lifecycle (SPEC §4): usage read incrementally (a long-lived ledger) equals usage read at
    once, so a gateway's view does not depend on when it refreshed."""
    numbered = list(enumerate(documents, start=1))
    ledger = UsageLedger("users", horizon=horizon)
    bounds = [0, *sorted(c % (len(numbered) + 1) for c in cuts), len(numbered)]
    for start, end in itertools.pairwise(bounds):
        ledger.fold(numbered[start:end])
    assert ledger.usage() == fold(documents, horizon)
    assert ledger.cursor == len(documents)


# -- retirement plans -------------------------------------------------------------------------------

LABELS = ["stable", "latest", "v1.2.0", "lts"]
PROTECTED = ("stable", "latest")


AGES = [0.0, 5 * DAY, 29 * DAY, 31 * DAY, 200 * DAY]
METADATA: list[dict[str, Any]] = [{}, {"state": "retired"}, {"descriptor": "x"}]
slot = st.integers(0, len(IDS) - 1)
"""Picks one of the fleet's versions (modulo how many there are)."""
raw_fleets = st.fixed_dictionaries(
    {
        "versions": st.lists(
            st.tuples(st.sampled_from(IDS), st.sampled_from(AGES), st.sampled_from(METADATA)),
            min_size=1, max_size=8, unique_by=lambda v: v[0],
        ),
        "labels": st.dictionaries(st.sampled_from(LABELS), slot, max_size=4),
        "states": st.dictionaries(slot, st.sampled_from(["hot", "warm", "cold"]), max_size=8),
        "overrides": st.dictionaries(slot, st.sampled_from(["keep", "retire"]), max_size=8),
        "last_seen": st.dictionaries(slot, st.floats(NOW - 100 * DAY, NOW), max_size=8),
        "idle_after": st.sampled_from([DAY, 30 * DAY, 90 * DAY]),
    }
)  # fmt: skip


def build_fleet(raw: dict[str, Any]) -> dict[str, Any]:
    """Versions with labels, states, overrides and last calls, in any combination."""
    ids = [v for v, _, _ in raw["versions"]]

    def pick(index: int) -> str:
        return ids[index % len(ids)]

    versions = [
        VersionRecord(
            id=v, created_at=NOW - age, schema={}, fingerprint="sha256:0", manifest={},
            metadata=dict(metadata),
        )
        for v, age, metadata in raw["versions"]
    ]  # fmt: skip
    return {
        "versions": versions,
        "labels": {label: pick(i) for label, i in raw["labels"].items()},
        "states": {pick(i): state for i, state in raw["states"].items()},
        "overrides": {pick(i): override for i, override in raw["overrides"].items()},
        "last_seen": {pick(i): seen for i, seen in raw["last_seen"].items()},
        "idle_after": raw["idle_after"],
    }


def fleets() -> st.SearchStrategy[dict[str, Any]]:
    return raw_fleets.map(build_fleet)


def retire_oracle(fleet: dict[str, Any]) -> set[str]:
    versions = fleet["versions"]
    newest = max(range(len(versions)), key=lambda i: (versions[i].created_at, i))
    chosen = set()
    for index, record in enumerate(versions):
        protected = any(fleet["labels"].get(label) == record.id for label in PROTECTED)
        override = fleet["overrides"].get(record.id)
        if (
            record.metadata.get("state") == "retired"
            or protected
            or index == newest
            or override == "keep"
        ):
            continue
        if override == "retire":
            chosen.add(record.id)
            continue
        since = max(fleet["last_seen"].get(record.id, record.created_at), record.created_at)
        if fleet["states"].get(record.id, "cold") == "cold" and NOW - since > fleet["idle_after"]:
            chosen.add(record.id)
    return chosen


def plan_of(fleet: dict[str, Any]) -> Any:
    return plan_retirement(
        fleet["versions"], fleet["labels"], fleet["states"], fleet["overrides"],
        now=NOW, idle_after=fleet["idle_after"], protected_labels=PROTECTED,
        last_seen=fleet["last_seen"],
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(fleet=fleets())
def test_protected_and_kept_and_newest_versions_are_never_retired(fleet: dict[str, Any]) -> None:
    """Lifecycle (SPEC §4): tags such as ``stable`` protect a version; manual keep overrides are
    honoured.

    No version a protected label points at, none with a keep override, and never the newest
    version is in the plan, whatever its traffic or a retire override says.
    """
    plan = plan_of(fleet)
    versions = fleet["versions"]
    newest = max(range(len(versions)), key=lambda i: (versions[i].created_at, i))
    for version in plan.to_retire:
        assert version not in {fleet["labels"].get(label) for label in PROTECTED}
        assert fleet["overrides"].get(version) != "keep"
        assert version != versions[newest].id


@settings(max_examples=300, deadline=None)
@given(fleet=fleets())
def test_a_retire_override_is_honoured_unless_the_version_is_protected(
    fleet: dict[str, Any],
) -> None:
    """Lifecycle (SPEC §4): manual retire overrides are honoured; tags protect a version.

    A version with a retire override is retired (even hot) exactly when it is not already
    retired, not protected by a label and not the newest; and then the reason says the override
    is not applied.
    """
    plan = plan_of(fleet)
    decided = {d.version: d for d in plan.decisions}
    versions = fleet["versions"]
    newest = versions[max(range(len(versions)), key=lambda i: (versions[i].created_at, i))].id
    for version, override in fleet["overrides"].items():
        if override != "retire":
            continue
        blocked = version == newest or version in {
            fleet["labels"].get(label) for label in PROTECTED
        }
        already = decided[version].state == "retired"
        assert decided[version].retire == (not blocked and not already)
        if blocked and not already:
            assert "retire override is not applied" in decided[version].reason


@settings(max_examples=300, deadline=None)
@given(fleet=fleets())
def test_the_plan_retires_exactly_the_idle_cold_and_overridden_versions_with_a_reason_each(
    fleet: dict[str, Any],
) -> None:
    """Lifecycle (SPEC §4): idle versions are retired automatically, under protection and
    overrides. Every version gets exactly one decision, in order, each with a reason."""
    plan = plan_of(fleet)
    assert [d.version for d in plan.decisions] == [v.id for v in fleet["versions"]]
    assert all(d.reason for d in plan.decisions)
    assert set(plan.to_retire) == retire_oracle(fleet)


@settings(max_examples=300, deadline=None)
@given(fleet=fleets())
def test_planning_is_a_dry_run_that_changes_none_of_its_inputs(fleet: dict[str, Any]) -> None:
    """Lifecycle (SPEC §4): a dry run is available. Planning reads its inputs and changes none of
    them (the store-backed dry run is pinned in test_versions_lifecycle_store_props.py)."""
    before = copy.deepcopy(fleet)
    plan_of(fleet)
    assert fleet == before
