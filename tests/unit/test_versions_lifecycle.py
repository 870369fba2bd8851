"""The version lifecycle's pure decisions: usage folding, hot/warm/cold, and retirement plans."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import runtime.versions
from runtime.errors import InvalidArgument, NotFound
from runtime.store import VersionRecord
from runtime.versions import (
    LifecyclePolicy,
    RetirementPlan,
    UsageLedger,
    classify,
    is_retired,
    plan_retirement,
    retired_error,
    state_of,
)
from runtime.versions._lifecycle import DAY, VersionUsage

NOW = 1_750_000_000.0


def version(version_id: str, created_at: float, **metadata: Any) -> VersionRecord:
    return VersionRecord(
        id=version_id,
        created_at=created_at,
        schema={},
        fingerprint=f"sha256:{version_id}",
        manifest={},
        metadata=metadata,
    )



# -- policy ------------------------------------------------------------------------------------


def test_the_default_policy_is_five_minutes_hot_a_week_warm_a_month_to_retire() -> None:
    policy = LifecyclePolicy()
    assert (policy.hot_window, policy.hot_threshold) == (300.0, 100)
    assert (policy.warm_window, policy.idle_after) == (7 * DAY, 30 * DAY)
    assert policy.protected_labels == ("stable", "latest")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"hot_window": 0.0}, "hot_window"),
        ({"hot_window": float("inf")}, "hot_window"),
        ({"warm_window": 10.0}, "warm_window"),
        ({"hot_threshold": 0}, "hot_threshold"),
        ({"hot_threshold": True}, "hot_threshold"),
        ({"idle_after": -1.0}, "idle_after"),
        ({"protected_labels": "stable"}, "protected_labels"),
    ],
)
def test_a_policy_with_a_meaningless_threshold_is_refused_naming_it(
    fields: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidArgument, match=named):
        LifecyclePolicy(**fields)


# -- usage ------------------------------------------------------------------------------------


def test_the_ledger_sums_buckets_from_every_gateway_and_keeps_the_last_call() -> None:
    ledger = UsageLedger("users")
    ledger.fold(
        [
            (1, {"at": NOW - 10, "counts": {"a": 3}}),
            (2, {"at": NOW - 5, "counts": {"a": 4, "b": 1}}),
        ]
    )
    usage = ledger.usage()
    assert usage["a"] == VersionUsage(NOW - 5, ((NOW - 10, 3), (NOW - 5, 4)))
    assert usage["b"] == VersionUsage(NOW - 5, ((NOW - 5, 1),))
    assert ledger.cursor == 2


def test_a_promotion_moves_the_last_call_without_adding_calls() -> None:
    ledger = UsageLedger("users")
    ledger.fold([(7, {"at": NOW - 100, "counts": {"a": 2}}), (9, {"at": NOW, "seen": ["a", "b"]})])
    assert ledger.usage() == {
        "a": VersionUsage(NOW, ((NOW - 100, 2),)),
        "b": VersionUsage(NOW, ()),
    }


def test_the_ledger_drops_buckets_older_than_its_horizon_but_remembers_the_last_call() -> None:
    ledger = UsageLedger("users", horizon=60.0)
    ledger.fold([(1, {"at": NOW - 3600, "counts": {"old": 50}})])
    ledger.fold([(2, {"at": NOW, "counts": {"new": 1}})])
    usage = ledger.usage()
    assert usage["old"] == VersionUsage(NOW - 3600, ())
    assert usage["new"].buckets == ((NOW, 1),)


def test_a_malformed_usage_entry_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = UsageLedger("users")
    with caplog.at_level(logging.WARNING):
        ledger.fold([
            (1, {"at": "yesterday", "counts": {"a": 1}}),
            (2, {"at": NOW, "counts": {"a": -1}}),
            (3, {"at": NOW, "seen": "a"}),
            (4, {"at": NOW, "counts": {"a": 2}}),
        ])  # fmt: skip
    assert ledger.usage() == {"a": VersionUsage(NOW, ((NOW, 2),))}
    assert ledger.cursor == 4
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"skipping usage entry {n} of usage" for n in (1, 2, 3)
    ]


def test_calls_since_counts_only_buckets_after_the_instant() -> None:
    usage = VersionUsage(NOW, ((NOW - 301, 50), (NOW - 300, 7), (NOW - 1, 5)))
    assert usage.calls_since(NOW - 300) == 5
    assert usage.calls_since(NOW - 302) == 62


# -- classification -----------------------------------------------------------------------------


def test_a_hundred_calls_in_five_minutes_is_hot_and_ninety_nine_is_warm() -> None:
    states = classify(
        {
            "hot": VersionUsage(NOW - 1, ((NOW - 200, 60), (NOW - 1, 40))),
            "warm": VersionUsage(NOW - 1, ((NOW - 200, 59), (NOW - 1, 40))),
        },
        now=NOW,
    )
    assert states == {"hot": "hot", "warm": "warm"}


def test_calls_older_than_the_hot_window_do_not_make_a_version_hot() -> None:
    usage = {"v": VersionUsage(NOW - 301, ((NOW - 301, 10_000),))}
    assert classify(usage, now=NOW) == {"v": "warm"}


def test_a_version_unused_for_a_week_or_never_used_is_cold() -> None:
    usage = {
        "week": VersionUsage(NOW - 7 * DAY, ()),
        "six_days": VersionUsage(NOW - 6 * DAY, ()),
        "never": VersionUsage(),
    }
    assert classify(usage, now=NOW) == {"week": "cold", "six_days": "warm", "never": "cold"}


def test_classify_takes_its_thresholds_as_arguments() -> None:
    usage = {"v": VersionUsage(NOW - 30, ((NOW - 30, 3),))}
    assert classify(usage, now=NOW, hot_window=60, hot_threshold=3) == {"v": "hot"}
    assert classify(usage, now=NOW, hot_window=10, warm_window=20) == {"v": "cold"}
    with pytest.raises(InvalidArgument, match="now"):
        classify(usage, now=float("nan"))


# -- state in record metadata ---------------------------------------------------------------


def test_only_the_retired_state_marks_a_version_retired() -> None:
    assert is_retired({"state": "retired", "retired_at": NOW})
    assert not is_retired({"state": "cold"})
    assert not is_retired({})


def test_a_version_without_a_recorded_state_counts_as_cold() -> None:
    assert state_of({}) == "cold"
    assert state_of({"state": "bogus"}) == "cold"
    assert state_of({"state": "hot"}) == "hot"


def test_the_refusal_of_a_retired_version_is_not_found_and_names_it_retired() -> None:
    error = retired_error("users", "2025-01-15")
    assert isinstance(error, NotFound)
    assert "'2025-01-15' is retired" in error.message
    assert "--keep 2025-01-15" in error.message


# -- retirement plans -----------------------------------------------------------------------------


def plan(
    versions: list[VersionRecord],
    labels: dict[str, str] | None = None,
    states: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    **kwargs: Any,
) -> RetirementPlan:
    return plan_retirement(versions, labels or {}, states or {}, overrides or {}, now=NOW, **kwargs)


def reasons(result: RetirementPlan) -> dict[str, tuple[bool, str]]:
    return {d.version: (d.retire, d.reason) for d in result.decisions}


OLD = NOW - 90 * DAY


def test_a_cold_version_idle_past_the_limit_is_retired_and_the_reason_says_how_long() -> None:
    result = plan([version("a", OLD), version("b", OLD + 1)], last_seen={"a": NOW - 40 * DAY})
    assert result.to_retire == ("a",)
    assert reasons(result)["a"] == (True, "cold: no calls for 40.0 days, longer than 30.0 days")


def test_a_cold_version_never_called_is_idle_since_it_was_recorded() -> None:
    result = plan([version("a", NOW - 10 * DAY), version("b", NOW)])
    assert reasons(result)["a"] == (False, "cold: never called for 10.0 days, not yet 30.0 days")
    assert plan([version("a", OLD), version("b", NOW)]).to_retire == ("a",)


def test_hot_and_warm_versions_are_kept_even_when_idle_long_ago() -> None:
    versions = [version("a", OLD), version("b", OLD), version("c", NOW)]
    result = plan(versions, states={"a": "hot", "b": "warm"})
    assert result.to_retire == ()
    assert reasons(result)["a"] == (False, "hot: still in use")
    assert reasons(result)["b"] == (False, "warm: still in use")


def test_a_protected_label_keeps_a_version_even_against_a_retire_override() -> None:
    versions = [version("a", OLD), version("b", OLD), version("c", NOW)]
    result = plan(versions, labels={"stable": "a", "v1.0.0": "b"}, overrides={"a": "retire"})
    assert result.to_retire == ("b",)
    retire, reason = reasons(result)["a"]
    assert not retire
    assert reason == (
        "protected by label 'stable' (its retire override is not applied); "
        "move the label to retire it"
    )


def test_the_protected_labels_are_configurable() -> None:
    versions = [version("a", OLD), version("b", NOW)]
    assert plan(versions, labels={"stable": "a"}, protected_labels=("lts",)).to_retire == ("a",)
    assert plan(versions, labels={"lts": "a"}, protected_labels=("lts",)).to_retire == ()


def test_the_newest_version_is_never_retired_even_by_override() -> None:
    result = plan([version("a", OLD), version("b", OLD)], overrides={"b": "retire"})
    assert result.to_retire == ("a",)
    assert reasons(result)["b"] == (
        False,
        "the newest version is never retired (its retire override is not applied)",
    )


def test_keep_outranks_idleness_and_retire_outranks_traffic() -> None:
    versions = [version("a", OLD), version("b", OLD), version("c", NOW)]
    result = plan(versions, states={"b": "hot"}, overrides={"a": "keep", "b": "retire"})
    assert result.to_retire == ("b",)
    assert reasons(result)["a"] == (False, "kept by a manual override")
    assert reasons(result)["b"] == (True, "retired by a manual override (it was hot)")


def test_an_already_retired_version_is_not_retired_again() -> None:
    result = plan([version("a", OLD, state="retired"), version("b", NOW)])
    assert result.to_retire == ()
    assert result.decisions[0].state == "retired"
    assert reasons(result)["a"] == (False, "already retired")


def test_a_plan_has_one_decision_per_version_in_the_given_order() -> None:
    versions = [version("c", NOW), version("a", OLD), version("b", OLD + 5)]
    result = plan(versions)
    assert [d.version for d in result.decisions] == ["c", "a", "b"]
    assert result.now == NOW
    assert all(d.reason for d in result.decisions)


def test_a_plan_refuses_a_nonsense_idle_limit() -> None:
    with pytest.raises(InvalidArgument, match="idle_after"):
        plan([version("a", OLD)], idle_after=0)


def test_every_version_of_a_removed_module_is_retired_whatever_its_labels_age_or_use() -> None:
    removed = {runtime.versions.REMOVED_KEY: NOW - 60}
    versions = [version("2025-01-15", NOW - 400 * DAY, **removed), version("2025-06-01", NOW - DAY, **removed)]
    plan = plan_retirement(
        versions, {"stable": "2025-01-15"}, {"2025-06-01": "hot"}, {}, now=NOW
    )
    assert [(d.version, d.retire) for d in plan.decisions] == [("2025-01-15", True), ("2025-06-01", True)]
    assert all("removed from the project" in d.reason for d in plan.decisions)
    kept = plan_retirement(versions, {}, {}, {"2025-06-01": "keep"}, now=NOW)
    assert [d.retire for d in kept.decisions] == [True, False], "a keep override still keeps"
