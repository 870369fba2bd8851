"""Property 30 (metrics come out correctly in the exporter) and Property 42 (the audit record is
complete)."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import tempfile
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from runtime.identity import Principal
from runtime.observability import AuditRecord, Metrics, read_audit_file, start_admin_server
from runtime.observability._admin import AdminServer
from runtime.observability._audit import FileAuditSink

BUCKETS = (0.5, 1.0, 2.5, 10.0)
_names = itertools.count()


@pytest.fixture(scope="module")
def exporter() -> Iterator[tuple[Metrics, AdminServer]]:
    """One Metrics and one admin server for the module; each example uses fresh metric names."""
    metrics = Metrics("property-30")
    admin = start_admin_server("127.0.0.1", 0, metrics=metrics)
    yield metrics, admin
    admin.close()
    metrics.close()


def scrape(admin: AdminServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"{admin.url}/metrics", timeout=5) as response:
        body = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


label_values = st.sampled_from(["a", "b", "c"])
amounts = st.one_of(st.integers(0, 1000), st.floats(0, 1000, allow_nan=False))
observations = st.floats(0, 20, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(
    increments=st.lists(st.tuples(label_values, amounts), max_size=30),
    recorded=st.lists(st.tuples(label_values, observations), max_size=30),
    gauge_sets=st.lists(st.tuples(label_values, st.integers(-1000, 1000)), max_size=10),
)
def test_scraped_values_equal_what_was_recorded(
    exporter: tuple[Metrics, AdminServer],
    increments: list[tuple[str, float]],
    recorded: list[tuple[str, float]],
    gauge_sets: list[tuple[str, int]],
) -> None:
    """Property 30: Metrics come out correctly in the exporter.

    Random counter increments, histogram observations and gauge settings, on series told apart
    by a label, are read back by scraping the real ``/metrics`` HTTP endpoint and parsing the
    Prometheus text: each counter equals the sum of its increments; each histogram's count, sum
    and cumulative buckets match the observations; each gauge holds the last value set.
    """
    metrics, admin = exporter
    n = next(_names)
    counter = metrics.counter(f"p30_events_{n}_total", "Events.")
    histogram = metrics.histogram(f"p30_latency_{n}", "Latency.", buckets=BUCKETS)
    gauge = metrics.gauge(f"p30_depth_{n}", "Depth.")
    sums: dict[str, float] = defaultdict(float)
    for label, amount in increments:
        counter.add(amount, {"series": label})
        sums[label] += amount
    observed: dict[str, list[float]] = defaultdict(list)
    for label, value in recorded:
        histogram.record(value, {"series": label})
        observed[label].append(value)
    last: dict[str, int] = {}
    for label, value in gauge_sets:
        gauge.set(value, {"series": label})
        last[label] = value

    values = scrape(admin)

    def at(name: str, label: str, **extra: str) -> float:
        return values[(name, frozenset({("series", label), *extra.items()}))]

    for label, total in sums.items():
        assert math.isclose(at(f"p30_events_{n}_total", label), total, rel_tol=1e-9, abs_tol=1e-9)
    for label, items in observed.items():
        assert at(f"p30_latency_{n}_count", label) == len(items)
        assert math.isclose(
            at(f"p30_latency_{n}_sum", label), sum(items), rel_tol=1e-9, abs_tol=1e-9
        )
        for bound in BUCKETS:
            expected = sum(1 for v in items if v <= bound)
            assert at(f"p30_latency_{n}_bucket", label, le=str(bound)) == expected
        assert at(f"p30_latency_{n}_bucket", label, le="+Inf") == len(items)
    for label, value in last.items():
        assert at(f"p30_depth_{n}", label) == value
    # Nothing invented: no series for labels that were never used.
    used = set(sums) | set(observed) | set(last)
    for (name, labels), _ in values.items():
        if name.startswith("p30_") and f"_{n}" in name:
            assert dict(labels)["series"] in used


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
events = st.lists(
    st.dictionaries(
        st.text(min_size=1, max_size=10),
        st.recursive(
            json_scalars,
            lambda inner: st.one_of(
                st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=4,
        ),
        max_size=4,
    ),
    max_size=5,
)
records = st.builds(
    AuditRecord,
    request_id=st.text(min_size=1, max_size=40),
    principal=st.builds(
        Principal,
        subject=st.text(min_size=1, max_size=20),
        roles=st.lists(st.text(min_size=1, max_size=8), max_size=3).map(tuple),
        method=st.sampled_from(["jwt", "api_key", "anonymous", "internal"]),
    ),
    method=st.text(min_size=1, max_size=60),
    version=st.text(min_size=1, max_size=30),
    manifest_hash=st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True),
    outcome=st.sampled_from(
        ["ok", "INVALID_ARGUMENT", "NOT_FOUND", "INTERNAL", "DEADLINE_EXCEEDED"]
    ),
    events=events.map(tuple),
    started_at=st.floats(0, 4e9, allow_nan=False),
    duration_ms=st.floats(0, 1e7, allow_nan=False),
)

REQUIRED = {
    "request_id",
    "principal",
    "method",
    "version",
    "manifest_hash",
    "outcome",
    "events",
    "started_at",
    "duration_ms",
}


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(records, min_size=1, max_size=3))
def test_audit_records_are_complete_and_round_trip_through_the_file(
    batch: list[AuditRecord],
) -> None:
    """Property 42: The audit record is complete.

    Every record written by the file sink is one JSON line holding every field (request id,
    principal, method, version, manifest hash, outcome, lifecycle events, start time, duration),
    and reading the file back gives the same records, in order.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"

        async def write_all() -> None:
            async with FileAuditSink(path) as sink:
                for item in batch:
                    await sink.write(item)

        asyncio.run(write_all())
        raw: list[dict[str, Any]] = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(raw) == len(batch)
        for entry in raw:
            assert set(entry) == REQUIRED
            assert set(entry["principal"]) >= {"subject", "roles", "method"}
        assert list(read_audit_file(path)) == batch
