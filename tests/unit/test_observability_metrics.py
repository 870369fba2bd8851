"""Metrics, the RED helper, the admin HTTP server, and tracing setup."""

from __future__ import annotations

import importlib.util
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime.config import ConfigError
from runtime.observability import Metrics, RedMetrics, configure_tracing, start_admin_server
from runtime.observability._tracing import OTLP_PACKAGE


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    instance = Metrics("test-service")
    yield instance
    instance.close()


def samples(text: bytes | str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body = text.decode() if isinstance(text, bytes) else text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_counter_gauge_and_histogram_are_exported(metrics: Metrics) -> None:
    metrics.counter("jobs_total", "Jobs run.").add(3, {"kind": "email"})
    gauge = metrics.gauge("queue_depth", "Messages waiting.")
    gauge.set(7)
    gauge.set(4)
    histogram = metrics.histogram("payload_bytes", "Payload sizes.", buckets=[10, 100])
    for size in (5, 50, 500):
        histogram.record(size)
    values = samples(metrics.render())
    assert values[("jobs_total", frozenset({("kind", "email")}))] == 3
    assert values[("queue_depth", frozenset())] == 4
    assert values[("payload_bytes_bucket", frozenset({("le", "10.0")}))] == 1
    assert values[("payload_bytes_bucket", frozenset({("le", "100.0")}))] == 2
    assert values[("payload_bytes_bucket", frozenset({("le", "+Inf")}))] == 3
    assert values[("payload_bytes_sum", frozenset())] == 555


def test_same_name_gives_the_same_instrument_and_a_kind_clash_is_refused(metrics: Metrics) -> None:
    assert metrics.counter("c_total") is metrics.counter("c_total")
    with pytest.raises(ValueError, match="already a counter"):
        metrics.gauge("c_total")


@pytest.mark.parametrize("name", ["", "9lives", "has space", "dash-ed", "dot.ted"])
def test_bad_metric_names_are_refused(metrics: Metrics, name: str) -> None:
    with pytest.raises(ValueError, match="bad metric name"):
        metrics.counter(name)


def test_instances_do_not_share_series() -> None:
    a, b = Metrics("a"), Metrics("b")
    try:
        a.counter("shared_total").add(1)
        b.counter("shared_total").add(5)
        assert samples(a.render())[("shared_total", frozenset())] == 1
        assert samples(b.render())[("shared_total", frozenset())] == 5
    finally:
        a.close()
        b.close()
        a.close()  # idempotent


def test_red_metrics_count_requests_errors_and_durations(metrics: Metrics) -> None:
    red = RedMetrics(metrics)
    red.observe("/orders.v1.Orders/Create", "2025-06-01", "OK", 0.02)
    red.observe("/orders.v1.Orders/Create", "2025-06-01", "ok", 0.2)  # the audit outcome form
    red.observe("/orders.v1.Orders/Create", "2025-06-01", "NOT_FOUND", 0.003)
    values = samples(metrics.render())
    ok = frozenset(
        {("method", "/orders.v1.Orders/Create"), ("version", "2025-06-01"), ("code", "OK")}
    )
    missing = ok - {("code", "OK")} | {("code", "NOT_FOUND")}
    assert values[("modrpc_requests_total", ok)] == 2
    assert values[("modrpc_requests_total", missing)] == 1
    assert values[("modrpc_request_errors_total", missing)] == 1
    assert ("modrpc_request_errors_total", ok) not in values
    assert values[("modrpc_request_duration_seconds_count", ok)] == 2
    assert values[("modrpc_request_duration_seconds_sum", ok)] == pytest.approx(0.22)
    assert values[("modrpc_request_duration_seconds_bucket", ok | {("le", "0.025")})] == 1


def test_admin_server_serves_metrics_and_health_on_a_free_port(metrics: Metrics) -> None:
    healthy = [True]
    metrics.counter("scraped_total").add(2)
    with start_admin_server("127.0.0.1", 0, metrics=metrics, health=lambda: healthy[0]) as admin:
        assert admin.port > 0
        status, content_type, body = get(f"{admin.url}/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert samples(body)[("scraped_total", frozenset())] == 2
        assert get(f"{admin.url}/healthz")[:1] == (200,)
        healthy[0] = False
        assert get(f"{admin.url}/healthz")[0] == 503
        assert get(f"{admin.url}/nope")[0] == 404


def test_admin_server_close_is_idempotent_and_releases_the_port(metrics: Metrics) -> None:
    admin = start_admin_server("127.0.0.1", 0, metrics=metrics)
    port = admin.port
    admin.close()
    admin.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    again = start_admin_server("127.0.0.1", port, metrics=metrics)
    assert again.port == port
    again.close()


def test_failing_health_check_reports_unhealthy(metrics: Metrics) -> None:
    def broken() -> bool:
        raise RuntimeError("store down")

    with start_admin_server("127.0.0.1", 0, metrics=metrics, health=broken) as admin:
        assert get(f"{admin.url}/healthz")[0] == 503


def test_tracing_without_endpoint_creates_spans_for_the_service() -> None:
    provider = configure_tracing("orders")
    try:
        assert provider.resource.attributes["service.name"] == "orders"
        with provider.get_tracer("t").start_as_current_span("work") as span:
            assert span.get_span_context().is_valid
    finally:
        provider.shutdown()


def test_otlp_endpoint_needs_the_otlp_package() -> None:
    if importlib.util.find_spec("opentelemetry.exporter.otlp") is not None:
        provider = configure_tracing("orders", otlp_endpoint="http://127.0.0.1:4317")
        provider.shutdown()
        return
    with pytest.raises(ConfigError, match=OTLP_PACKAGE) as caught:
        configure_tracing("orders", otlp_endpoint="http://127.0.0.1:4317")
    assert "otlp_endpoint" in str(caught.value)
