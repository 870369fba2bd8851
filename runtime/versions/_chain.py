"""Transformer chains: a request at an old version walks forward, its response walks back.

A module's versions form a chain through their ``parent`` edges. Between two consecutive
versions there is a :class:`TransformStep`: for each method whose request changed, a forward
function (old shape → new), and for each whose response changed, a backward function (new →
old). A method a step does not mention passes through unchanged. A breaking version with no
step source at all cannot be reached by transformation; it must be served side by side.

Each hop has a time limit. An ``async`` transformer is cancelled at the limit; a plain function
cannot be pre-empted, so it is timed and its result refused when it overran (keep transformers
pure and quick; they run on the gateway's event loop).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from runtime.errors import DeadlineExceeded, FailedPrecondition, InternalError, ModrpcError
from runtime.wire import snake

__all__ = ["MAX_HOPS", "TransformStep", "Transformer", "run_chain"]

log = logging.getLogger("modrpc.versions")

MAX_HOPS = 10
"""The longest chain of transformer steps a call may need (SPEC §4)."""

Transformer = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class TransformStep:
    """The transformers between ``from_version`` and ``to_version`` (its child)."""

    module: str
    from_version: str
    to_version: str
    forward: Mapping[str, Transformer] = field(default_factory=dict)
    """Method name → request transformer (``from_version`` shape → ``to_version`` shape)."""
    backward: Mapping[str, Transformer] = field(default_factory=dict)
    """Method name → response transformer (``to_version`` shape → ``from_version`` shape)."""

    @property
    def name(self) -> str:
        return f"{self.module} {self.from_version} -> {self.to_version}"

    @classmethod
    def from_source(
        cls, module: str, from_version: str, to_version: str, source: str, *, methods: Sequence[str], origin: str
    ) -> TransformStep:
        """Build a step from a transformer module's source text (as kept in the store).

        ``forward_<method>_request`` and ``backward_<method>_response`` functions are picked up
        for each of ``methods`` (PascalCase gRPC names).
        """
        namespace = types.ModuleType(f"modrpc_transformer_{snake(module)}_{to_version.replace('-', '_')}")
        namespace.__file__ = origin
        try:
            exec(compile(source, origin, "exec"), namespace.__dict__)
        except Exception as exc:
            raise InternalError(f"transformer {origin} failed to load: {exc}") from exc
        forward: dict[str, Transformer] = {}
        backward: dict[str, Transformer] = {}
        for method in methods:
            fwd = getattr(namespace, f"forward_{snake(method)}_request", None)
            bwd = getattr(namespace, f"backward_{snake(method)}_response", None)
            if callable(fwd):
                forward[method] = fwd
            if callable(bwd):
                backward[method] = bwd
        return cls(module, from_version, to_version, forward, backward)


async def _hop(step: TransformStep, fn: Transformer, direction: str, method: str, data: dict[str, Any], limit: float) -> dict[str, Any]:
    where = f"{step.name} {direction} {method}"
    started = time.perf_counter()
    try:
        if inspect.iscoroutinefunction(fn):
            async with asyncio.timeout(limit):
                result = await fn(dict(data))
        else:
            result = fn(dict(data))
    except TimeoutError:
        log.error("transformer hop %s exceeded its %.3fs limit", where, limit)
        raise InternalError(f"transformer hop {where} timed out") from None
    except (ModrpcError, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.error("transformer hop %s failed: %s", where, exc, exc_info=True)
        raise InternalError(f"transformer hop {where} failed") from exc
    elapsed = time.perf_counter() - started
    if elapsed > limit:
        log.error("transformer hop %s took %.3fs, over its %.3fs limit", where, elapsed, limit)
        raise InternalError(f"transformer hop {where} timed out")
    if not isinstance(result, dict):
        log.error("transformer hop %s returned %s, not a dict", where, type(result).__name__)
        raise InternalError(f"transformer hop {where} returned no object")
    return result


async def run_chain(
    steps: Sequence[TransformStep],
    method: str,
    data: dict[str, Any],
    *,
    direction: str,
    hop_timeout: float = 0.25,
    deadline_remaining: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Apply ``steps`` to ``data``: forward in order for requests, backward in reverse for responses.

    ``steps`` are given oldest first in both directions; ``direction`` is ``"forward"`` or
    ``"backward"``. More than :data:`MAX_HOPS` steps is refused.
    """
    if len(steps) > MAX_HOPS:
        raise FailedPrecondition(
            f"version chain needs {len(steps)} transformer hops; at most {MAX_HOPS} are allowed"
        )
    ordered = steps if direction == "forward" else list(reversed(steps))
    for step in ordered:
        fn = (step.forward if direction == "forward" else step.backward).get(method)
        if fn is None:
            continue
        limit = hop_timeout
        if deadline_remaining is not None:
            left = deadline_remaining()
            if left <= 0:
                raise DeadlineExceeded(f"deadline passed while transforming {method} ({step.name})")
            limit = min(limit, left)
        if trace.get_current_span().is_recording():  # traced: each hop is a span of its own
            with _tracer.start_as_current_span(
                f"transform {direction} {method}",
                attributes={"modrpc.step": step.name, "modrpc.direction": direction, "modrpc.method": method},
            ):
                data = await _hop(step, fn, direction, method, data, limit)
        else:
            data = await _hop(step, fn, direction, method, data, limit)
    return data


_tracer = trace.get_tracer("modrpc")
"""Resolved through the global provider at each span, so one installed later is used."""
