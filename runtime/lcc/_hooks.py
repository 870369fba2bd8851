"""Hooks: code that runs around a handler, at four levels and in three phases (SPEC §3).

A hook is a plain or ``async`` function. Its signature depends on the phase, and is checked when
the hook is registered, so a wrong one fails at start-up rather than on the first request::

    before:  fn(lctx, req)
    after:   fn(lctx, req, resp)
    catch:   fn(lctx, req, exc)

Return values are ignored. A hook that raises fails the request (after a catch hook: it is logged
and the original error stands). Each hook has its own ``timeout`` (seconds, per attempt) and
``retries`` (extra attempts after a failure); cancellation is never retried.

Levels run in the order ``global → module → handler → request`` for before hooks, and in exactly
the reverse order for after and catch hooks, like layers of an onion; within a level, hooks keep
the order they were registered in (reversed on the way out).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from runtime.errors import SchemaError
from runtime.lcc._calls import call_with_timeout, callable_name, is_async_callable

__all__ = ["LEVELS", "PHASES", "HookSpec", "Level", "Phase", "ordered", "run_hook"]

Phase: TypeAlias = Literal["before", "after", "catch"]
Level: TypeAlias = Literal["global", "module", "handler", "request"]
PHASES: tuple[Phase, ...] = ("before", "after", "catch")
LEVELS: tuple[Level, ...] = ("global", "module", "handler", "request")
_PARAMS: dict[str, tuple[str, ...]] = {
    "before": ("lctx", "req"),
    "after": ("lctx", "req", "resp"),
    "catch": ("lctx", "req", "exc"),
}

logger = logging.getLogger("modrpc.lcc")


@dataclass(frozen=True, slots=True)
class HookSpec:
    """One registered hook. Invalid specs are refused with :class:`runtime.errors.SchemaError`.

    Build one with :meth:`of` to get the id and source filled in from the function:

        >>> def audit(lctx, req): ...
        >>> HookSpec.of(audit, "before", "module").id
        'audit'
    """

    id: str
    """Unique name of the hook within its level, as shown in events and the manifest."""
    phase: Phase
    level: Level
    fn: Callable[..., Any]
    timeout: float | None = None
    """Seconds allowed for each attempt; ``None`` for no limit (the request deadline still applies)."""
    retries: int = 0
    """Extra attempts after a failed one (so ``retries=2`` means at most three calls)."""
    source: str = ""
    """``file:line`` where the hook is defined, for the manifest and error messages."""

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise SchemaError(f"hook {self.id!r}: phase {self.phase!r} is not one of {PHASES}")
        if self.level not in LEVELS:
            raise SchemaError(f"hook {self.id!r}: level {self.level!r} is not one of {LEVELS}")
        if not self.id:
            raise SchemaError(f"a {self.phase} hook at level {self.level} has an empty id")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise SchemaError(
                f"hook {self.id!r}: retries must be an int >= 0, got {self.retries!r}"
            )
        if self.timeout is not None and not self.timeout > 0:
            raise SchemaError(
                f"hook {self.id!r}: timeout must be > 0 seconds, got {self.timeout!r}"
            )
        _check_shape(self.id, self.phase, self.fn)

    @classmethod
    def of(
        cls,
        fn: Callable[..., Any],
        phase: Phase,
        level: Level,
        *,
        timeout: float | None = None,
        retries: int = 0,
        id: str | None = None,
    ) -> HookSpec:
        """A spec for ``fn``; ``id`` defaults to the function's qualified name."""
        return cls(
            id=id or callable_name(fn),
            phase=phase,
            level=level,
            fn=fn,
            timeout=timeout,
            retries=retries,
            source=_source_of(fn),
        )

    @property
    def is_async(self) -> bool:
        """Whether the hook is awaited on the loop (True) or run in a thread (False)."""
        return is_async_callable(self.fn)

    def to_json(self) -> dict[str, Any]:
        """The hook as the handler manifest records it (everything but the function itself)."""
        return {
            "id": self.id,
            "phase": self.phase,
            "level": self.level,
            "is_async": self.is_async,
            "timeout": self.timeout,
            "retries": self.retries,
            "source": self.source,
        }


def _check_shape(hook_id: str, phase: str, fn: Callable[..., Any]) -> None:
    expected = f"{phase} hook {hook_id!r} must be callable as fn({', '.join(_PARAMS[phase])})"
    if not callable(fn):
        raise SchemaError(f"{expected}; got a {type(fn).__name__}, which is not callable")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{expected}; its signature cannot be read ({exc})") from exc
    try:
        signature.bind(*_PARAMS[phase])
    except TypeError as exc:
        raise SchemaError(f"{expected}; {callable_name(fn)}{signature} is not ({exc})") from exc


def _source_of(fn: Callable[..., Any]) -> str:
    target = inspect.unwrap(fn)
    try:
        path = inspect.getsourcefile(target) or inspect.getfile(target)
        line = inspect.getsourcelines(target)[1]
    except (TypeError, OSError):
        return ""
    return f"{path}:{line}"


def ordered(hooks: Iterable[HookSpec], phase: Phase) -> list[HookSpec]:
    """The hooks of ``phase`` in the order they run (see the module docstring)."""
    chosen = sorted((h for h in hooks if h.phase == phase), key=lambda h: LEVELS.index(h.level))
    return chosen if phase == "before" else chosen[::-1]


async def run_hook(spec: HookSpec, args: tuple[Any, ...]) -> None:
    """Call one hook with its timeout and retries; the last failure is raised as it was.

    Only :class:`Exception` is retried: ``CancelledError`` (a ``BaseException``) goes straight
    through, so a cancelled request never keeps retrying its hooks.
    """
    retrying = AsyncRetrying(
        stop=stop_after_attempt(spec.retries + 1),
        retry=retry_if_exception_type(Exception),
        reraise=True,
        before_sleep=_log_retry(spec),
    )
    await retrying(call_with_timeout, spec.fn, args, spec.timeout, f"hook {spec.id!r}")


def _log_retry(spec: HookSpec) -> Callable[[RetryCallState], None]:
    def log(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.debug(
            "hook %s attempt %d of %d failed: %r",
            spec.id,
            state.attempt_number,
            spec.retries + 1,
            error,
        )

    return log
