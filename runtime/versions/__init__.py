"""Timescape: version ids, resolution of ``x-api-version``, catalogs, transformer chains and
the version lifecycle (usage, hot/warm/cold, promotion, retirement).

Shared by the gateway and the workers, so neither imports the other.
"""

from runtime.versions._catalog import (
    VersionCatalog,
    VersionInfo,
    decode_descriptor,
    encode_descriptor,
)
from runtime.versions._chain import MAX_HOPS, Transformer, TransformStep, run_chain
from runtime.versions._conversion import Conversion, plan
from runtime.versions._lifecycle import (
    DAY,
    REMOVED_KEY,
    Activity,
    LifecyclePolicy,
    LifecycleState,
    Override,
    RetirementDecision,
    RetirementPlan,
    UsageLedger,
    VersionUsage,
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
from runtime.versions._resolve import VersionId, VersionTable

__all__ = [
    "DAY",
    "MAX_HOPS",
    "REMOVED_KEY",
    "Activity",
    "Conversion",
    "LifecyclePolicy",
    "LifecycleState",
    "Override",
    "RetirementDecision",
    "RetirementPlan",
    "TransformStep",
    "Transformer",
    "UsageLedger",
    "VersionCatalog",
    "VersionId",
    "VersionInfo",
    "VersionTable",
    "VersionUsage",
    "VersionedReflection",
    "apply_retirement",
    "classify",
    "decode_descriptor",
    "encode_descriptor",
    "is_removed",
    "is_retired",
    "mark_removed",
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
]
