"""The request lifecycle (LCC): LocalContext, hooks, lifecycle events, snapshots and replays.

A worker builds a :class:`RequestMeta` and a :class:`LocalContext` for each call and hands both,
with the handler, its hooks and validators, to :func:`run_lifecycle` as one
:class:`LifecycleCall`. Everything here is plain asyncio: no gRPC, no backend, no worker.

    meta = RequestMeta(request_id=new_request_id(), handler="users.GetUser",
                       method="/users.v1.Users/GetUser", version="2025-06-01",
                       flags=parse_flags(metadata.get("x-flags")), deadline=deadline,
                       principal=principal)
    response = await run_lifecycle(LifecycleCall(
        handler=get_user, request=req, lctx=LocalContext(meta, redact=secrets.redact),
        gctx=gctx, hooks=hooks, validate_request=check_req, validate_response=check_resp,
        sink=audit_events, snapshots=snapshot_store, snapshot_policy=policy.snapshot))
"""

from runtime.lcc._context import EffectKind, LocalContext, current_context
from runtime.lcc._events import EventKind, LifecycleEvent, MemoryEventSink
from runtime.lcc._hooks import HookSpec, Level, Phase, run_hook
from runtime.lcc._json import to_jsonable
from runtime.lcc._lifecycle import DEADLINE_SLACK, LifecycleCall, Stream, run_lifecycle
from runtime.lcc._meta import RequestMeta, parse_flags
from runtime.lcc._replay import (
    ReplayDiff,
    ReplayResult,
    TraceChange,
    ValueChange,
    diff_replays,
    replay,
    replay_meta,
    run_captured,
)
from runtime.lcc._snapshot import SNAPSHOT_FLAG, Snapshot, permitted_flags
from runtime.lcc._store import (
    LogSnapshotStore,
    MemorySnapshotStore,
    SnapshotStore,
    Spool,
    WriteBehindSnapshots,
)

__all__ = [
    "DEADLINE_SLACK",
    "SNAPSHOT_FLAG",
    "EffectKind",
    "EventKind",
    "HookSpec",
    "Level",
    "LifecycleCall",
    "LifecycleEvent",
    "LocalContext",
    "LogSnapshotStore",
    "MemoryEventSink",
    "MemorySnapshotStore",
    "Phase",
    "ReplayDiff",
    "ReplayResult",
    "RequestMeta",
    "Snapshot",
    "SnapshotStore",
    "Spool",
    "Stream",
    "TraceChange",
    "ValueChange",
    "WriteBehindSnapshots",
    "current_context",
    "diff_replays",
    "parse_flags",
    "permitted_flags",
    "replay",
    "replay_meta",
    "run_captured",
    "run_hook",
    "run_lifecycle",
    "to_jsonable",
]
