"""Snapshots: one request's lifecycle state as plain data (SPEC §3 "Snapshots", Property 21).

A :class:`Snapshot` is taken with ``lctx.snapshot()`` and turned back into a context with
``LocalContext.restore(snapshot)``. It is pure JSON-shaped data, so ``Snapshot.from_json(
s.to_json()) == s`` and it can be stored anywhere that keeps JSON. Secrets are removed before the
data is built into a snapshot (the context's ``redact`` function sees the whole document), so
nothing downstream, not even the store, ever holds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, get_args

from runtime.errors import InvalidArgument
from runtime.lcc._events import LifecycleEvent
from runtime.lcc._meta import RequestMeta

__all__ = ["SNAPSHOT_FLAG", "SNAPSHOT_FORMAT", "Snapshot", "TaskStatus", "permitted_flags", "should_snapshot"]

TaskStatus: TypeAlias = Literal["pending", "done", "cancelled", "failed"]
TASK_STATUSES: frozenset[str] = frozenset(get_args(TaskStatus))
SNAPSHOT_FORMAT = 1
"""Version of the JSON layout; bumped when it changes so old stored snapshots are recognised."""

SNAPSHOT_FLAG = "snapshot"
"""The ``x-flags`` flag that asks for a snapshot of one request."""


def permitted_flags(
    flags: frozenset[str], roles: Iterable[str], snapshot_roles: frozenset[str] | None
) -> frozenset[str]:
    """``flags`` without ``snapshot`` unless ``roles`` hold one of ``snapshot_roles`` (None: no
    check, for a caller whose flags were checked already).

    The gateway drops the flag for callers without such a role; a worker checks again for the
    principal it acts for, since peers other than the gateway (a module, a developer's
    certificate) reach it too.

        >>> sorted(permitted_flags(frozenset({"snapshot", "debug"}), ("users:read",), frozenset({"ops"})))
        ['debug']
    """
    if snapshot_roles is None or SNAPSHOT_FLAG not in flags or not snapshot_roles.isdisjoint(roles):
        return flags
    return flags - {SNAPSHOT_FLAG}


def should_snapshot(meta: RequestMeta, policy_snapshot: bool, *, refused: bool = False) -> bool:
    """Whether to store a snapshot of this request: the method's policy says so, or the caller
    sent the ``snapshot`` flag in ``x-flags`` and validation did not refuse the request.

    A refused request is stored only by policy: otherwise anyone allowed the flag could fill
    the store with requests the method never accepted. (Who may send the flag at all is decided
    by the roles in ``auth.snapshot_roles``: :func:`permitted_flags`, at the gateway and again in
    the worker.)
    """
    return policy_snapshot or (not refused and SNAPSHOT_FLAG in meta.flags)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of one request's lifecycle at one moment. Treat it as read-only data."""

    request: Any
    """The request, as JSON data (after redaction)."""
    state: dict[str, Any]
    """The lctx key-value state, as JSON data (after redaction)."""
    tasks: dict[str, TaskStatus]
    """Each task started with ``lctx.spawn``, by name: pending, done, cancelled or failed."""
    last_hook: int
    """Position, in the order hooks ran, of the last hook started; -1 when none has run."""
    version: str
    """The handler version the request ran against."""
    events: tuple[LifecycleEvent, ...]
    """The lifecycle events so far."""
    meta: dict[str, Any]
    """``lctx.meta`` as :meth:`RequestMeta.to_json` writes it (deadline as milliseconds left)."""
    effects: tuple[dict[str, Any], ...] = ()
    """What the request did outside itself, in order: each module call with its request and its
    response or status, each publish with its topic and payload (see
    :meth:`LocalContext.record_effect`). A replay answers module calls from these."""

    @property
    def request_id(self) -> str:
        return str(self.meta["request_id"])

    @property
    def handler(self) -> str:
        """The handler id, ``module.Method``."""
        return str(self.meta["handler"])

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "request": self.request,
            "state": self.state,
            "tasks": self.tasks,
            "last_hook": self.last_hook,
            "version": self.version,
            "events": [event.to_json() for event in self.events],
            "meta": self.meta,
            "effects": [dict(effect) for effect in self.effects],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        """Parse :meth:`to_json` output; anything else raises :class:`InvalidArgument`."""
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"a snapshot is a JSON object, got {type(data).__name__}")
        if data.get("format") != SNAPSHOT_FORMAT:
            raise InvalidArgument(
                f"snapshot format {data.get('format')!r} is not supported (expected {SNAPSHOT_FORMAT})"
            )
        try:
            tasks = dict(data["tasks"])
            for name, status in tasks.items():
                if status not in TASK_STATUSES:
                    raise ValueError(f"task {name!r} has unknown status {status!r}")
            snapshot = cls(
                request=data["request"],
                state=dict(data["state"]),
                tasks=tasks,
                last_hook=int(data["last_hook"]),
                version=str(data["version"]),
                events=tuple(LifecycleEvent.from_json(event) for event in data["events"]),
                meta=dict(data["meta"]),
                effects=tuple(_effect(effect) for effect in data.get("effects", ())),
            )
            RequestMeta.from_json(snapshot.meta)  # the meta must describe a real request
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"malformed snapshot: {exc!r}") from exc
        return snapshot


EFFECT_KINDS = frozenset(("module_call", "publish"))


def _effect(data: Any) -> dict[str, Any]:
    """One recorded effect, checked: a JSON object with a known ``kind`` and a ``target``."""
    effect = dict(data)
    if effect.get("kind") not in EFFECT_KINDS or not isinstance(effect.get("target"), str):
        raise ValueError(f"an effect needs a kind in {sorted(EFFECT_KINDS)} and a target: {effect!r}")
    return effect
