"""The version lifecycle: usage, hot/warm/cold, promotion and retirement (SPEC §4 "Lifecycle").

Every version is hot, warm or cold according to its recent traffic. A request to a cold version
promotes it to warm. Idle cold versions are retired, except those a protected label (``stable``,
``latest``) points at, the newest version, and those an operator keeps; an operator may also
retire a version by hand. A plan can be computed without changing anything (a dry run).

Pure decisions, then the store::

    usage (stream "usage:<module>")  ──UsageLedger──▶  classify()  ──▶  plan_retirement()
         ▲ record_usage / promote                        │                   │
      gateways                                 refresh_states()      apply_retirement()
                                               metadata["state"]     metadata["state"] = "retired"

Why usage is an append-only stream and not ``VersionRecord.metadata["usage"]``: several gateways
flush counters every few seconds. Folding into the record would be a read-modify-write that
loses one gateway's counts whenever two flush at once, and every ``put_version`` wakes every
watcher of the store. ``append`` is one insert: concurrent flushes never conflict, and appends
raise no watch events. Each flush is one entry per module, ``{"at": t, "counts": {id: n}}`` (a
time bucket), written only when there was traffic, so idle modules write nothing; a promotion
adds ``{"at": t, "seen": [id]}``. Readers fold entries into a :class:`UsageLedger`, which keeps
each version's last call and only the buckets the hot window needs, and keeps its cursor so a
long-lived process reads only new entries.

Lifecycle state lives in ``VersionRecord.metadata``: ``state`` (``hot``, ``warm``, ``cold``,
``retired``), ``retired_at`` and ``retired_reason``, and ``override`` (``keep`` or ``retire``).
Gateways refuse a retired version with NOT_FOUND::

    if is_retired(record.metadata): raise retired_error(module, record.id)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, cast, get_args

from runtime.errors import InvalidArgument, NotFound
from runtime.store import ManifestStore, VersionRecord

__all__ = [
    "DAY",
    "Activity",
    "LifecyclePolicy",
    "LifecycleState",
    "Override",
    "RetirementDecision",
    "RetirementPlan",
    "UsageLedger",
    "VersionUsage",
    "apply_retirement",
    "classify",
    "is_retired",
    "plan_retirement",
    "promote",
    "record_usage",
    "refresh_states",
    "retired_error",
    "retirement_plan",
    "set_override",
    "state_of",
]

log = logging.getLogger("modrpc.versions")

Activity: TypeAlias = Literal["hot", "warm", "cold"]
"""How busy a version is; what :func:`classify` answers."""
LifecycleState: TypeAlias = Literal["hot", "warm", "cold", "retired"]
"""What ``metadata["state"]`` holds: an activity, or ``retired`` once retirement is applied."""
Override: TypeAlias = Literal["keep", "retire"]
"""An operator's decision that outranks traffic: never retire, or retire at the next pass."""

_STATES: frozenset[str] = frozenset(get_args(LifecycleState))
_OVERRIDES: frozenset[str] = frozenset(get_args(Override))

DAY = 86_400.0
"""Seconds in a day, for windows written in days."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecyclePolicy:
    """The thresholds of the lifecycle. The defaults suit a service with steady traffic.

    >>> LifecyclePolicy().idle_after / DAY
    30.0
    """

    hot_window: float = 300.0
    """Seconds of traffic that decide "hot": the last five minutes."""
    hot_threshold: int = 100
    """Calls within ``hot_window`` (summed over every gateway) that make a version hot."""
    warm_window: float = 7 * DAY
    """A version called (or promoted) within this many seconds is at least warm."""
    idle_after: float = 30 * DAY
    """A cold version idle this long (since its last call, or since it was recorded) retires."""
    protected_labels: tuple[str, ...] = ("stable", "latest")
    """A version any of these labels points at is never retired, whatever the override."""

    def __post_init__(self) -> None:
        _check_windows(self.hot_window, self.warm_window, self.hot_threshold)
        _positive(self.idle_after, "idle_after")
        if isinstance(self.protected_labels, str):
            raise InvalidArgument(f"protected_labels must be labels, got {self.protected_labels!r}")


def _positive(seconds: float, what: str) -> None:
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidArgument(f"{what} must be a positive number of seconds, got {seconds!r}")


def _check_windows(hot_window: float, warm_window: float, hot_threshold: int) -> None:
    _positive(hot_window, "hot_window")
    if not (math.isfinite(warm_window) and warm_window >= hot_window):
        raise InvalidArgument(f"warm_window must be at least hot_window, got {warm_window!r}")
    # Zero would make a version nobody calls "hot", which means nothing.
    if isinstance(hot_threshold, bool) or not isinstance(hot_threshold, int) or hot_threshold < 1:
        raise InvalidArgument(f"hot_threshold must be a count of 1 or more, got {hot_threshold!r}")


_DEFAULTS: Final = LifecyclePolicy()


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"{what} must be finite unix seconds, got {value!r}")
    return float(value)


def _span(seconds: float) -> str:
    """A duration as a person reads it: ``40.0 days``, ``3.5 hours``, ``12 minutes``."""
    if seconds >= DAY:
        return f"{seconds / DAY:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes" if seconds >= 60 else f"{seconds:.0f} seconds"


# -- usage ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionUsage:
    """One version's traffic: its last call and its recent calls in time buckets.

    >>> VersionUsage(last_seen=90.0, buckets=((60.0, 3), (90.0, 2))).calls_since(70.0)
    2
    """

    last_seen: float | None = None
    """Unix seconds of the newest bucket with calls, or of a promotion; None if never called."""
    buckets: tuple[tuple[float, int], ...] = ()
    """``(at, calls)`` of recent flushes from every gateway; old ones are dropped."""

    def calls_since(self, since: float) -> int:
        """Calls in buckets stamped after ``since`` (a gateway clock ahead of ours counts too)."""
        return sum(calls for at, calls in self.buckets if at > since)


def _stream(module: str) -> str:
    # One stream per module: reading one module's usage never scans another's.
    return f"usage:{module}"


class UsageLedger:
    """A module's usage folded from its stream, read incrementally.

    Keep one per long-lived process and call :meth:`refresh` before each classification: it
    reads only entries after its cursor. Buckets older than ``horizon`` before the newest entry
    are dropped, so memory stays bounded by traffic in the horizon; ``horizon`` must be at least
    the ``hot_window`` the usage is classified with.

        ledger = UsageLedger("users")
        await ledger.refresh(store)
        states = classify(ledger.usage(), now=time.time())
    """

    def __init__(self, module: str, *, horizon: float = _DEFAULTS.hot_window) -> None:
        _positive(horizon, "horizon")
        self.module = module
        self.horizon = horizon
        self.cursor = 0
        """The id of the last entry folded; :meth:`refresh` reads after it."""
        self._last_seen: dict[str, float] = {}
        self._buckets: dict[str, list[tuple[float, int]]] = {}
        self._newest = -math.inf

    def fold(self, entries: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        """Add stream entries (``(id, document)``, as ``store.read`` gives them) to the ledger.

        An entry that is not a usage document is skipped with a warning: one bad write must
        not stop every later classification.
        """
        for entry_id, document in entries:
            self.cursor = max(self.cursor, entry_id)
            try:
                at, counts, seen = _parse_entry(document)
            except InvalidArgument as exc:
                log.warning("skipping usage entry %s of usage:%s: %s", entry_id, self.module, exc)
                continue
            self._newest = max(self._newest, at)
            for version, calls in counts.items():
                self._buckets.setdefault(version, []).append((at, calls))
            for version in (*counts, *seen):
                self._last_seen[version] = max(at, self._last_seen.get(version, -math.inf))
        oldest = self._newest - self.horizon
        for version, buckets in self._buckets.items():
            self._buckets[version] = [b for b in buckets if b[0] > oldest]

    async def refresh(self, store: ManifestStore, *, page: int = 1000) -> int:
        """Fold every entry appended since the last refresh; returns how many were read."""
        read = 0
        while True:
            entries = await store.read(_stream(self.module), after=self.cursor, limit=page)
            self.fold(entries)
            read += len(entries)
            if len(entries) < page:
                return read

    def usage(self) -> dict[str, VersionUsage]:
        """Each version seen so far with its last call and buckets (oldest first)."""
        return {
            version: VersionUsage(last_seen, tuple(sorted(self._buckets.get(version, ()))))
            for version, last_seen in sorted(self._last_seen.items())
        }


def _parse_entry(document: Mapping[str, Any]) -> tuple[float, dict[str, int], list[str]]:
    if not isinstance(document, Mapping):
        raise InvalidArgument(f"expected a JSON object, got {type(document).__name__}")
    at = _finite(document.get("at"), "at")
    counts, seen = document.get("counts", {}), document.get("seen", [])
    if not isinstance(counts, Mapping) or not isinstance(seen, list) or not all(map(_id, seen)):
        raise InvalidArgument("counts must be an object and seen a list of version ids")
    return at, _check_counts(counts), seen


def _id(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _check_counts(counts: Mapping[str, int]) -> dict[str, int]:
    checked: dict[str, int] = {}
    for version, calls in counts.items():
        if not _id(version):
            raise InvalidArgument(f"usage is counted per version id (a string), got {version!r}")
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
            raise InvalidArgument(f"calls to {version!r} must be a count >= 0, got {calls!r}")
        if calls:
            checked[version] = calls
    return checked


async def record_usage(
    store: ManifestStore, module: str, counts: Mapping[str, int], now: float
) -> int | None:
    """Persist one flush of a gateway's counters for ``module``: ``{version_id: calls}``.

    Call it off the request path, every few seconds, with the counts since the last flush.
    Returns the stream entry's id, or None when every count is zero and nothing was written.
    InvalidArgument for a negative or non-integer count.

        await record_usage(store, "users", {"2025-06-01": 42}, now=time.time())
    """
    checked = _check_counts(counts)
    at = _finite(now, "now")
    if not checked:
        return None
    return await store.append(_stream(module), {"at": at, "counts": checked})


# -- classification -----------------------------------------------------------------------------


def classify(
    usage: Mapping[str, VersionUsage],
    *,
    now: float,
    hot_window: float = _DEFAULTS.hot_window,
    warm_window: float = _DEFAULTS.warm_window,
    hot_threshold: int = _DEFAULTS.hot_threshold,
) -> dict[str, Activity]:
    """Hot, warm or cold for every version in ``usage``, by its traffic as of ``now``.

    Hot: at least ``hot_threshold`` calls in the last ``hot_window`` seconds. Warm: otherwise,
    any call (or promotion) in the last ``warm_window`` seconds. Cold: everything else, including
    versions never called (pass them with an empty :class:`VersionUsage`).

    >>> classify({"a": VersionUsage(100.0, ((100.0, 500),)), "b": VersionUsage(100.0, ((100.0, 1),)),
    ...           "c": VersionUsage()}, now=200.0)
    {'a': 'hot', 'b': 'warm', 'c': 'cold'}
    """
    _check_windows(hot_window, warm_window, hot_threshold)
    now = _finite(now, "now")
    states: dict[str, Activity] = {}
    for version, seen in usage.items():
        if seen.calls_since(now - hot_window) >= hot_threshold:
            states[version] = "hot"
        elif seen.last_seen is not None and seen.last_seen > now - warm_window:
            states[version] = "warm"
        else:
            states[version] = "cold"
    return states


def is_retired(metadata: Mapping[str, Any]) -> bool:
    """Whether a version's record metadata marks it retired; gateways must then refuse it."""
    return metadata.get("state") == "retired"


REMOVED_KEY = "removed_at"
"""Metadata key set on every version of a module removed from its project (unix seconds).

A gateway stops listing such a module once no worker of it is registered; a worker of the
module starting again clears it; ``modrpc versions M --retire`` retires every such version."""


def is_removed(metadata: Mapping[str, Any]) -> bool:
    """Whether a version's module was removed from its project (see :data:`REMOVED_KEY`)."""
    return metadata.get(REMOVED_KEY) is not None


async def mark_removed(store: ManifestStore, module: str, *, now: float) -> int:
    """Record that ``module`` left its project, on each of its versions; how many changed."""
    changed = 0
    for record in await store.list_versions(module):
        if not is_removed(record.metadata):
            await _rewrite(store, module, record, {**record.metadata, REMOVED_KEY: now})
            changed += 1
    return changed


def retired_error(module: str, version_id: str) -> NotFound:
    """The NOT_FOUND a gateway raises for a call that resolves to a retired version."""
    return NotFound(
        f"module {module!r} version {version_id!r} is retired; call a newer version "
        f"(or ask an operator to keep it: modrpc versions {module} --keep {version_id})"
    )


def state_of(metadata: Mapping[str, Any]) -> LifecycleState:
    """The recorded state of a version; ``cold`` when none was recorded yet.

    A gateway promotes a version whose state is ``cold`` on its first call (see :func:`promote`).
    """
    state = metadata.get("state")
    return cast(LifecycleState, state) if isinstance(state, str) and state in _STATES else "cold"


def _override_of(metadata: Mapping[str, Any]) -> Override | None:
    value = metadata.get("override")
    return cast(Override, value) if isinstance(value, str) and value in _OVERRIDES else None


# -- retirement planning ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetirementDecision:
    """What happens to one version, and why, in words an operator can act on."""

    version: str
    retire: bool
    reason: str
    state: LifecycleState
    """The version's state when decided (its activity, or ``retired``)."""


@dataclass(frozen=True, slots=True)
class RetirementPlan:
    """One decision per version, oldest first. Computing a plan changes nothing (a dry run)."""

    now: float
    decisions: tuple[RetirementDecision, ...]
    protected_labels: tuple[str, ...] = ("stable", "latest")

    @property
    def to_retire(self) -> tuple[str, ...]:
        """The ids of the versions this plan retires."""
        return tuple(d.version for d in self.decisions if d.retire)


def plan_retirement(
    versions: Sequence[VersionRecord],
    labels: Mapping[str, str],
    states: Mapping[str, str],
    overrides: Mapping[str, Override],
    *,
    now: float,
    idle_after: float = _DEFAULTS.idle_after,
    protected_labels: Sequence[str] = _DEFAULTS.protected_labels,
    last_seen: Mapping[str, float] | None = None,
) -> RetirementPlan:
    """Decide, for each version, whether to retire it now. Pure: nothing is read or written.

    The first rule that applies decides:

    1. already retired (``metadata["state"]``): nothing to do;
    1a. a ``keep`` override on a version of a removed module: kept;
    1b. its module was removed from the project (:data:`REMOVED_KEY`): retired, whatever its
        labels, age or use, since no worker will serve it again;
    2. a protected label points at it: kept, even with a ``retire`` override (move the label
       first: retiring what ``stable`` names would break every caller without a header);
    3. the newest version (by ``created_at``, ties to the later one): kept, even with a
       ``retire`` override, so the module always has a version to serve;
    4. a ``keep`` override: kept;
    5. a ``retire`` override: retired, even if hot or warm;
    6. hot or warm (``states``; a version missing there counts as cold): kept;
    7. cold and idle longer than ``idle_after``, idle since ``last_seen`` (its last call) or,
       never called, since ``created_at``: retired; otherwise kept.
    """
    now = _finite(now, "now")
    _positive(idle_after, "idle_after")
    seen = last_seen or {}
    protected = frozenset(protected_labels)
    labels_of: dict[str, list[str]] = {}
    for label, target in sorted(labels.items()):
        labels_of.setdefault(target, []).append(label)
    newest = max(range(len(versions)), key=lambda i: (versions[i].created_at, i), default=None)
    decisions = []
    for index, record in enumerate(versions):
        override = overrides.get(record.id)
        state: LifecycleState = (
            "retired" if is_retired(record.metadata) else _activity(states.get(record.id))
        )
        guard = [label for label in labels_of.get(record.id, ()) if label in protected]
        refused = " (its retire override is not applied)" if override == "retire" else ""
        retire = False
        if state == "retired":
            reason = "already retired"
        elif is_removed(record.metadata) and override == "keep":
            reason = "kept by a manual override (its module was removed from the project)"
        elif is_removed(record.metadata):
            retire, reason = True, f"its module was removed from the project (it was {state})"
        elif guard:
            reason = f"protected by label {guard[0]!r}{refused}; move the label to retire it"
        elif index == newest:
            reason = f"the newest version is never retired{refused}"
        elif override == "keep":
            reason = "kept by a manual override"
        elif override == "retire":
            retire, reason = True, f"retired by a manual override (it was {state})"
        elif state != "cold":
            reason = f"{state}: still in use"
        else:
            since = seen.get(record.id)
            idle = now - (record.created_at if since is None else max(since, record.created_at))
            what = "never called" if since is None else "no calls"
            retire = idle > idle_after
            verdict = "longer than" if retire else "not yet"
            reason = f"cold: {what} for {_span(max(idle, 0.0))}, {verdict} {_span(idle_after)}"
        decisions.append(RetirementDecision(record.id, retire, reason, state))
    return RetirementPlan(now, tuple(decisions), tuple(protected_labels))


def _activity(state: str | None) -> Activity:
    return "hot" if state == "hot" else "warm" if state == "warm" else "cold"


def _overridden(metadata: Mapping[str, Any], override: Override | None) -> dict[str, Any]:
    """``metadata`` with ``override`` set (None clears it). Keeping a retired version restores it."""
    if override is not None and override not in _OVERRIDES:
        raise InvalidArgument(f"override must be 'keep', 'retire' or None, got {override!r}")
    changed = {k: v for k, v in metadata.items() if k != "override"}
    if override is not None:
        changed["override"] = override
    if override == "keep" and is_retired(metadata):
        changed["state"] = "cold"
        changed.pop("retired_at", None)
        changed.pop("retired_reason", None)
    return changed


# -- the store ----------------------------------------------------------------------------------


async def _rewrite(
    store: ManifestStore, module: str, record: VersionRecord, metadata: dict[str, Any]
) -> None:
    # One put_version is one transaction, so each version changes entirely or not at all. The
    # store has no compare-and-set: a label moved between our read and this write would be
    # undone, so callers re-read the record just before writing to keep that window short.
    await store.put_version(module, dataclasses.replace(record, metadata=metadata))


async def promote(
    store: ManifestStore, module: str, version_id: str, *, now: float
) -> LifecycleState:
    """Record a call to a cold version so it counts as warm from now on; returns its state.

    The call is appended to the usage stream first (every later classification then sees the
    version warm at least), then ``metadata["state"]`` becomes ``warm`` unless it is hot or warm
    already. NotFound for an unknown version, and for a retired one (:func:`retired_error`).
    Gateways call it in the background, once per version, when a request arrives for a version
    whose :func:`state_of` is ``cold``.
    """
    at = _finite(now, "now")
    record = await store.get_version(module, version_id)
    if is_retired(record.metadata):
        raise retired_error(module, version_id)
    await store.append(_stream(module), {"at": at, "seen": [version_id]})
    state = state_of(record.metadata)
    if state in ("hot", "warm"):
        return state
    record = await store.get_version(module, version_id)  # fresh, just before writing
    if is_retired(record.metadata):  # retired meanwhile: never undo that
        raise retired_error(module, version_id)
    await _rewrite(store, module, record, {**record.metadata, "state": "warm", "promoted_at": at})
    return "warm"


async def refresh_states(
    store: ManifestStore,
    module: str,
    *,
    now: float,
    policy: LifecyclePolicy = _DEFAULTS,
    ledger: UsageLedger | None = None,
) -> dict[str, LifecycleState]:
    """Classify every version by the usage in the store and record changed states.

    Only versions whose state changed are written (each write wakes the store's watchers);
    retired versions are left alone. Pass a long-lived ``ledger`` to read only new usage.
    """
    ledger = await _refreshed(store, module, policy, ledger)
    records = await store.list_versions(module)
    activity = _classify_records(records, ledger, now, policy)
    states: dict[str, LifecycleState] = {}
    for record in records:
        if is_retired(record.metadata):
            states[record.id] = "retired"
            continue
        states[record.id] = activity[record.id]
        if record.metadata.get("state") != activity[record.id]:
            fresh = await store.get_version(module, record.id)
            if not is_retired(fresh.metadata):  # retired since the listing: leave it so
                await _rewrite(store, module, fresh, {**fresh.metadata, "state": states[record.id]})
    return states


async def _refreshed(
    store: ManifestStore, module: str, policy: LifecyclePolicy, ledger: UsageLedger | None
) -> UsageLedger:
    if ledger is None:
        ledger = UsageLedger(module, horizon=policy.hot_window)
    elif ledger.module != module or ledger.horizon < policy.hot_window:
        raise InvalidArgument(
            f"a ledger of {ledger.module!r} with a {ledger.horizon}s horizon cannot classify "
            f"{module!r} over a {policy.hot_window}s hot window"
        )
    await ledger.refresh(store)
    return ledger


def _classify_records(
    records: Sequence[VersionRecord], ledger: UsageLedger, now: float, policy: LifecyclePolicy
) -> dict[str, Activity]:
    usage = ledger.usage()
    return classify(
        {r.id: usage.get(r.id, VersionUsage()) for r in records},
        now=now, hot_window=policy.hot_window, warm_window=policy.warm_window,
        hot_threshold=policy.hot_threshold,
    )  # fmt: skip


async def set_override(
    store: ManifestStore, module: str, version_id: str, override: Override | None
) -> VersionRecord:
    """Record an operator's ``keep`` or ``retire`` for a version (None clears it); returns it.

    A ``retire`` override takes effect at the next :func:`apply_retirement`, and never on a
    protected or the newest version. ``keep`` on a retired version restores it (state ``cold``),
    which is how a retirement is undone. NotFound for an unknown version.
    """
    record = await store.get_version(module, version_id)
    metadata = _overridden(record.metadata, override)
    if metadata != record.metadata:
        await _rewrite(store, module, record, metadata)
        record = dataclasses.replace(record, metadata=metadata)
    return record


async def retirement_plan(
    store: ManifestStore,
    module: str,
    *,
    now: float,
    policy: LifecyclePolicy = _DEFAULTS,
    overrides: Mapping[str, Override | None] | None = None,
    ledger: UsageLedger | None = None,
) -> RetirementPlan:
    """The retirement plan for ``module`` as the store stands: a dry run, nothing is written.

    ``overrides`` are pending changes (``{version_id: "keep" | "retire" | None}``) applied to the
    plan as if :func:`set_override` had recorded them: what the plan would be if they were set.
    NotFound for a pending override of an unknown version.
    """
    ledger = await _refreshed(store, module, policy, ledger)
    records = await store.list_versions(module)
    known = {r.id for r in records}
    for version_id in overrides or {}:
        if version_id not in known:
            raise NotFound(f"module {module!r} has no version {version_id!r}")
    pending = overrides or {}
    records = [
        dataclasses.replace(r, metadata=_overridden(r.metadata, pending[r.id]))
        if r.id in pending
        else r
        for r in records
    ]
    found = {r.id: o for r in records if (o := _override_of(r.metadata)) is not None}
    usage = ledger.usage()
    return plan_retirement(
        records, await store.labels(module), _classify_records(records, ledger, now, policy), found,
        now=now, idle_after=policy.idle_after, protected_labels=policy.protected_labels,
        last_seen={v: u.last_seen for v, u in usage.items() if u.last_seen is not None},
    )  # fmt: skip


async def apply_retirement(
    store: ManifestStore, module: str, plan: RetirementPlan, *, now: float | None = None
) -> tuple[RetirementDecision, ...]:
    """Mark every version the plan retires as retired; returns what was done, version by version.

    Each version is one write (``state = "retired"``, ``retired_at``, ``retired_reason``), so it
    is retired entirely or not at all. Each is re-read first and skipped, with the reason, when
    the store changed since the plan (a protected label now points at it, an operator now keeps
    it, it is already retired or gone) or when it is the newest version, so even a plan built by
    hand cannot break those rules. ``now`` stamps ``retired_at`` (default: the plan's time).
    """
    at = plan.now if now is None else _finite(now, "now")
    protected = frozenset(plan.protected_labels)
    done: list[RetirementDecision] = []
    listed = await store.list_versions(module)
    newest = listed[-1].id if listed else None
    for decision in plan.decisions:
        if not decision.retire:
            continue
        try:
            record = await store.get_version(module, decision.version)
        except NotFound:
            done.append(dataclasses.replace(decision, retire=False, reason="skipped: gone"))
            continue
        # A removed module's versions are retired whatever their labels and age: nothing
        # serves them any more (rule 1b of plan_retirement).
        removed = is_removed(record.metadata)
        guard = [] if removed else sorted(set(record.labels) & protected)
        skip = (
            "already retired" if is_retired(record.metadata)
            else f"now protected by label {guard[0]!r}" if guard
            else "now kept by a manual override" if _override_of(record.metadata) == "keep"
            else "the newest version is never retired" if record.id == newest and not removed
            else None
        )  # fmt: skip
        if skip is not None:
            done.append(dataclasses.replace(decision, retire=False, reason=f"skipped: {skip}"))
            continue
        retired = {"state": "retired", "retired_at": at, "retired_reason": decision.reason}
        await _rewrite(store, module, record, {**record.metadata, **retired})
        done.append(dataclasses.replace(decision, state="retired"))
    return tuple(done)
