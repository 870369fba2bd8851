"""The live view: per method, calls per second, error rate and p50/p99 over the last minutes.

Computed from the very series ``/metrics`` exports (``modrpc_requests_total`` and the
``modrpc_request_duration_seconds`` histogram, read from the gateway's registry as a scrape
would), sampled every :data:`SAMPLE_SECONDS`; a window's figures are the difference between its
last and first samples, and quantiles are interpolated within histogram buckets the way
Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

__all__ = ["SAMPLE_SECONDS", "LiveView", "quantile"]

SAMPLE_SECONDS = 2.0
KEPT_SECONDS = 15 * 60.0
"""How far back samples are kept: the longest window the page offers."""


@dataclass(frozen=True)
class _Series:
    count: float
    errors: float
    buckets: tuple[tuple[float, float], ...]
    """Cumulative (upper bound, count) pairs, +Inf last."""


Sample = tuple[float, Mapping[str, _Series]]


def read_registry(registry: CollectorRegistry) -> dict[str, _Series]:
    """The current totals per method path, summed over versions and status codes."""
    counts: dict[str, float] = {}
    errors: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in registry.collect():
        if family.name == "modrpc_requests":
            for s in family.samples:
                if s.name.endswith("_total"):
                    method = s.labels.get("method", "")
                    counts[method] = counts.get(method, 0.0) + s.value
        elif family.name == "modrpc_request_errors":
            for s in family.samples:
                if s.name.endswith("_total"):
                    method = s.labels.get("method", "")
                    errors[method] = errors.get(method, 0.0) + s.value
        elif family.name == "modrpc_request_duration_seconds":
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    method = s.labels.get("method", "")
                    bound = float(s.labels["le"])
                    per = buckets.setdefault(method, {})
                    per[bound] = per.get(bound, 0.0) + s.value
    return {
        method: _Series(count, errors.get(method, 0.0), tuple(sorted(buckets.get(method, {}).items())))
        for method, count in counts.items()
    }


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """``histogram_quantile(q, ...)`` over cumulative ``(upper bound, count)`` buckets, in seconds."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):  # beyond the last finite bucket: its bound is the best known
                return lower_bound
            span = count - lower_count
            fraction = (rank - lower_count) / span if span > 0 else 1.0
            return lower_bound + (bound - lower_bound) * fraction
        lower_bound, lower_count = bound, count
    return lower_bound


def _delta(new: _Series, old: _Series | None) -> _Series:
    if old is None:
        return new
    old_buckets = dict(old.buckets)
    return _Series(
        new.count - old.count,
        new.errors - old.errors,
        tuple((bound, count - old_buckets.get(bound, 0.0)) for bound, count in new.buckets),
    )


class LiveView:
    """Samples a registry on a clock and answers per-method figures over a window."""

    def __init__(self, read: Callable[[], Mapping[str, _Series]], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._clock = clock
        self._samples: deque[Sample] = deque(maxlen=int(KEPT_SECONDS / SAMPLE_SECONDS) + 2)
        self._lock = threading.Lock()

    @classmethod
    def of_registry(cls, registry: CollectorRegistry) -> LiveView:
        return cls(lambda: read_registry(registry))

    def sample(self) -> None:
        """Take one sample now."""
        taken = (self._clock(), self._read())
        with self._lock:
            self._samples.append(taken)

    def figures(self, window: float = 300.0, points: int = 60) -> dict[str, Any]:
        """Per method over the last ``window`` seconds: rate, error rate, p50, p99 (ms), and a
        calls-per-second series of up to ``points`` values for a sparkline."""
        self.sample()
        with self._lock:
            samples = list(self._samples)
        now = samples[-1][0]
        inside = [s for s in samples if s[0] >= now - window] or samples[-1:]
        first, last = inside[0], inside[-1]
        if first is last and len(samples) > 1:  # one sample in the window: use the one before
            first = samples[-2]
        seconds = max(last[0] - first[0], 1e-9)
        methods = []
        for method, series in sorted(last[1].items()):
            delta = _delta(series, first[1].get(method))
            p50, p99 = quantile(0.5, delta.buckets), quantile(0.99, delta.buckets)
            methods.append(
                {
                    "method": method,
                    "calls": delta.count,
                    "rate": delta.count / seconds if last is not first else 0.0,
                    "error_rate": delta.errors / delta.count if delta.count else 0.0,
                    "p50_ms": None if p50 is None else p50 * 1000,
                    "p99_ms": None if p99 is None else p99 * 1000,
                    "total": series.count,
                    "series": _rates(inside, method, points),
                }
            )
        return {"window_s": window, "covered_s": seconds if last is not first else 0.0, "sample_s": SAMPLE_SECONDS, "methods": methods}


def _rates(samples: Sequence[Sample], method: str, points: int) -> list[float]:
    step = max(1, math.ceil((len(samples) - 1) / points))
    chosen = list(samples[::step])
    if chosen[-1] is not samples[-1]:
        chosen.append(samples[-1])
    out = []
    for before, after in itertools.pairwise(chosen):
        a, b = before[1].get(method), after[1].get(method)
        calls = (b.count if b else 0.0) - (a.count if a else 0.0)
        out.append(round(calls / max(after[0] - before[0], 1e-9), 3))
    return out
