"""Replaying a stored snapshot against any version, and diffing two replays (Properties 45, 46).

A replay runs the snapshot's request again, usually through the real lifecycle of another
version of the handler, and captures the outcome as a :class:`ReplayResult`: the response (or
the error status) and the trace of lifecycle events. :func:`diff_replays` then compares two
results response against response (by JSON path) and trace against trace.

The worker supplies the ``run`` function, because only it knows how to load a version::

    async def run(request_json, version):
        handler, hooks = registry.resolve(snapshot.handler, version)
        lctx = LocalContext(replay_meta(snapshot, version))
        req = handler.request_model.model_validate(request_json)
        return await run_captured(LifecycleCall(handler=handler.fn, request=req, lctx=lctx, ...))

    old, new = await replay(snapshot, run, "2025-01-15"), await replay(snapshot, run, "2025-06-01")
    print(diff_replays(old, new))
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from runtime.deadline import Clock
from runtime.errors import InternalError, InvalidArgument, ModrpcError, status_of
from runtime.identity import new_request_id
from runtime.lcc._events import LifecycleEvent
from runtime.lcc._json import to_jsonable
from runtime.lcc._lifecycle import LifecycleCall, run_lifecycle
from runtime.lcc._meta import RequestMeta
from runtime.lcc._snapshot import SNAPSHOT_FLAG, Snapshot

__all__ = [
    "ReplayDiff",
    "ReplayResult",
    "TraceChange",
    "ValueChange",
    "diff_replays",
    "replay",
    "replay_meta",
    "run_captured",
]

TraceEntry = tuple[str, str]
"""One step of a trace: the event's ``(kind, name)``; times are left out so traces compare."""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """The outcome of one replay."""

    version: str
    """The version the request was replayed against."""
    response: Any
    """The response as JSON data; ``None`` when the replay failed."""
    status: str
    """``OK`` or the gRPC status name of the error, e.g. ``INVALID_ARGUMENT``."""
    message: str = ""
    """The error message (empty on success); a non-runtime exception shows only its type."""
    trace: tuple[TraceEntry, ...] = ()
    """The lifecycle events of the replay, as ``(kind, name)`` pairs."""

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    @classmethod
    def succeeded(
        cls, version: str, response: Any, events: Iterable[LifecycleEvent] = ()
    ) -> ReplayResult:
        return cls(version, to_jsonable(response), "OK", "", trace_of(events))

    @classmethod
    def failed(
        cls, version: str, error: Exception, events: Iterable[LifecycleEvent] = ()
    ) -> ReplayResult:
        """The result of a replay that raised ``error``, with the status the caller would get."""
        message = error.message if isinstance(error, ModrpcError) else type(error).__name__
        return cls(version, None, status_of(error).name, message, trace_of(events))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "response": self.response,
            "status": self.status,
            "message": self.message,
            "trace": [list(entry) for entry in self.trace],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplayResult:
        trace = tuple((str(kind), str(name)) for kind, name in data.get("trace", ()))
        return cls(
            data["version"], data["response"], data["status"], data.get("message", ""), trace
        )


def trace_of(events: Iterable[LifecycleEvent]) -> tuple[TraceEntry, ...]:
    return tuple((event.kind, event.name) for event in events)


def replay_meta(snapshot: Snapshot, version: str, *, clock: Clock = time.monotonic) -> RequestMeta:
    """The meta for replaying ``snapshot`` at ``version``.

    Same handler, method, caller and flags; a fresh request id, so the replay has its own audit
    record; no deadline, because the original one has long passed; and without the ``snapshot``
    flag, so replays do not store snapshots of themselves.
    """
    original = RequestMeta.from_json(snapshot.meta, clock=clock)
    return dataclasses.replace(
        original,
        request_id=new_request_id(),
        version=version,
        deadline=None,
        flags=original.flags - {SNAPSHOT_FLAG},
    )


async def run_captured(call: LifecycleCall) -> ReplayResult:
    """Run ``call`` through :func:`run_lifecycle` and capture its outcome instead of raising.

    The version is ``call.lctx.meta.version``. Cancellation is not an outcome: it propagates.
    """
    version = call.lctx.meta.version
    try:
        response = await run_lifecycle(call)
    except Exception as exc:
        return ReplayResult.failed(version, exc, call.lctx.events)
    return ReplayResult.succeeded(version, response, call.lctx.events)


async def replay(
    snapshot: Snapshot,
    run: Callable[[Any, str], Awaitable[ReplayResult]],
    version: str,
) -> ReplayResult:
    """Replay the snapshot's request against ``version`` with ``run(request_json, version)``.

    ``run`` gets its own copy of the request, so a replay cannot alter the snapshot, and must
    report the version it was given; a result for another version is a bug and raises
    :class:`runtime.errors.InternalError`.
    """
    if not version:
        raise InvalidArgument("a replay needs a version to run against")
    result = await run(copy.deepcopy(snapshot.request), version)
    if result.version != version:
        raise InternalError(f"replay asked for version {version!r} but ran {result.version!r}")
    return result


@dataclass(frozen=True, slots=True)
class ValueChange:
    """One difference between two JSON values, at ``path`` (``items[2].sku``; ``""`` = root)."""

    path: str
    kind: Literal["changed", "added", "removed"]
    before: Any
    """The value in the first response (``None`` when added)."""
    after: Any
    """The value in the second response (``None`` when removed)."""


@dataclass(frozen=True, slots=True)
class TraceChange:
    """A run of trace steps that differ: ``before`` (from ``at`` in the first trace) became
    ``after`` in the second."""

    op: Literal["replace", "delete", "insert"]
    at: int
    before: tuple[TraceEntry, ...]
    after: tuple[TraceEntry, ...]


@dataclass(frozen=True, slots=True)
class ReplayDiff:
    """How two replays differ: outcome, response by JSON path, and trace."""

    status: tuple[str, str] | None
    """``(first, second)`` status names when they differ, else ``None``."""
    messages: tuple[str, str] | None
    """``(first, second)`` error messages when they differ, else ``None``."""
    response: tuple[ValueChange, ...]
    trace: tuple[TraceChange, ...]

    @property
    def identical(self) -> bool:
        return not (self.status or self.messages or self.response or self.trace)


def diff_replays(a: ReplayResult, b: ReplayResult) -> ReplayDiff:
    """Compare two replays (typically one snapshot at two versions)."""
    changes: list[ValueChange] = []
    _diff_json(a.response, b.response, "", changes)
    matcher = difflib.SequenceMatcher(a=a.trace, b=b.trace, autojunk=False)
    trace = tuple(
        TraceChange(op, i1, a.trace[i1:i2], b.trace[j1:j2])
        for op, i1, i2, j1, j2 in matcher.get_opcodes()
        if op != "equal"
    )
    return ReplayDiff(
        status=None if a.status == b.status else (a.status, b.status),
        messages=None if a.message == b.message else (a.message, b.message),
        response=tuple(changes),
        trace=trace,
    )


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _key_path(path: str, key: str) -> str:
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _diff_json(a: Any, b: Any, path: str, out: list[ValueChange]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            sub = _key_path(path, key)
            if key not in b:
                out.append(ValueChange(sub, "removed", a[key], None))
            elif key not in a:
                out.append(ValueChange(sub, "added", None, b[key]))
            else:
                _diff_json(a[key], b[key], sub, out)
    elif isinstance(a, list) and isinstance(b, list):
        for index in range(max(len(a), len(b))):
            sub = f"{path}[{index}]"
            if index >= len(b):
                out.append(ValueChange(sub, "removed", a[index], None))
            elif index >= len(a):
                out.append(ValueChange(sub, "added", None, b[index]))
            else:
                _diff_json(a[index], b[index], sub, out)
    elif isinstance(a, dict | list) or isinstance(b, dict | list) or not _same(a, b):
        out.append(ValueChange(path, "changed", a, b))
