"""Timescape: version ids, resolution of ``x-api-version``, catalogs, transformer chains and
the version lifecycle (usage, hot/warm/cold, promotion, retirement).

Shared by the gateway and the workers, so neither imports the other.
"""

from runtime.versions._catalog import VersionCatalog, VersionInfo, encode_descriptor
from runtime.versions._chain import run_chain
from runtime.versions._conversion import Conversion, plan
from runtime.versions._history import RecordedVersion, VersionHistory, build_version_files
from runtime.versions._lifecycle import (
    REMOVED_KEY,
    LifecyclePolicy,
    LifecycleState,
    Override,
    RetirementDecision,
    RetirementPlan,
    UsageLedger,
    apply_retirement,
    classify,
    is_removed,
    is_retired,
    mark_removed,
    plan_retirement,
    promote,
    record_usage,
    refresh_states,
    retired_error,
    retirement_plan,
    set_override,
    state_of,
)
from runtime.versions._reflection import VersionedReflection
from runtime.versions._resolve import is_version_id, parse_version_id, version_instant
from runtime.versions._stubs import unfilled_transformers

__all__ = [
    "REMOVED_KEY",
    "Conversion",
    "LifecyclePolicy",
    "LifecycleState",
    "Override",
    "RecordedVersion",
    "RetirementDecision",
    "RetirementPlan",
    "UsageLedger",
    "VersionCatalog",
    "VersionHistory",
    "VersionInfo",
    "VersionedReflection",
    "apply_retirement",
    "build_version_files",
    "classify",
    "encode_descriptor",
    "is_removed",
    "is_retired",
    "is_version_id",
    "mark_removed",
    "parse_version_id",
    "plan",
    "plan_retirement",
    "promote",
    "record_usage",
    "refresh_states",
    "retired_error",
    "retirement_plan",
    "run_chain",
    "set_override",
    "state_of",
    "unfilled_transformers",
    "version_instant",
]
