"""The playground's parts on their own: span ring, log tail, live figures, guard, catalog, codec."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import runtime.playground as playground
from runtime.config import load_settings
from runtime.errors import InvalidArgument, NotFound, Unauthenticated
from runtime.identity import Principal
from runtime.observability import (
    STEP_EVENT,
    LogTail,
    Metrics,
    RedMetrics,
    TraceRing,
    start_admin_server,
)
from runtime.playground._access import Guard
from runtime.playground._catalog import version_diff, version_schema
from runtime.playground._explorer import encode_request
from runtime.playground._live import LiveView, quantile, read_registry
from runtime.playground._traces import timeline
from runtime.store import open_store
from runtime.versions import VersionCatalog
from tests.conftest import MODULES_DIR


def test_the_public_surface_is_small() -> None:
    assert playground.__all__ == ["GatewayView", "Playground"]


# -- settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "enabled", "admin_port", "on", "open_"),
    [
        ("127.0.0.1", None, 9464, True, True),
        ("::1", None, 9464, True, True),
        ("localhost", None, 9464, True, True),
        ("0.0.0.0", None, 9464, False, False),
        ("10.1.2.3", None, 9464, False, False),
        ("10.1.2.3", True, 9464, True, False),
        ("127.0.0.1", False, 9464, False, False),
        ("127.0.0.1", None, 0, False, False),
    ],
)
def test_the_playground_is_on_by_default_only_on_loopback_and_open_only_there(
    host: str, enabled: bool | None, admin_port: int, on: bool, open_: bool
) -> None:
    settings = load_settings(host=host, admin_port=admin_port, playground={"enabled": enabled})
    assert (settings.playground_on, settings.playground_open) == (on, open_)


# -- the span ring -----------------------------------------------------------------------------
def test_the_ring_keeps_the_newest_spans_by_request_and_forgets_evicted_traces() -> None:
    ring = TraceRing(6)
    provider = TracerProvider()
    provider.add_span_processor(ring)
    tracer = provider.get_tracer("t")
    for n in range(5):
        with tracer.start_as_current_span(f"server-{n}", attributes={"modrpc.request_id": f"r{n}"}, kind=SpanKind.SERVER) as span:
            span.add_event(STEP_EVENT, {"step": "authenticate"})
            with tracer.start_as_current_span(f"child-{n}"):
                pass
    assert len(ring) == 6
    assert ring.trace_of("r0") == [] and ring.trace_of("r1") == []
    spans = ring.trace_of("r4")
    assert [s.name for s in spans] == ["server-4", "child-4"]
    assert spans[1].parent_id == spans[0].span_id and spans[0].events[0].attributes["step"] == "authenticate"
    assert ring.request_ids(2) == ["r4", "r3"]
    assert [s.request_id for s in ring.roots(10)] == ["r4", "r3", "r2"]
    with pytest.raises(ValueError):
        TraceRing(0)


# -- the log tail ------------------------------------------------------------------------------
def record(request_id: str, n: int) -> dict[str, Any]:
    return {"request_id": request_id, "method": "/m.v1.M/X", "n": n}


async def test_the_file_tail_starts_near_the_end_follows_appends_and_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = [json.dumps(record(f"old-{n}", n)) + "\n" for n in range(100)]
    path.write_text("".join(lines))
    tail = LogTail(path=path, capacity=1000, tail_bytes=len(lines[-1]) * 10 + 5)
    await tail.poll()
    kept = [r["n"] for r in tail.recent(1000)]
    assert kept == list(range(99, 89, -1))  # the last ten whole records, newest first
    with path.open("a") as handle:
        handle.write(json.dumps(record("new", 1)) + "\n" + json.dumps(record("new", 2))[:10])
    assert await tail.poll() == 1
    with path.open("a") as handle:
        handle.write(json.dumps(record("new", 2))[10:] + "\nnot json\n")
    assert await tail.poll() == 1
    assert [r["n"] for r in tail.records_of("new")] == [1, 2]
    path.unlink()
    path.write_text(json.dumps(record("rotated", 7)) + "\n")
    await tail.poll()
    assert tail.records_of("rotated")[0]["n"] == 7
    positions = [p for p, _ in tail.entries(3)]
    assert positions[0] == 0  # the byte offset of the rotated file's first line


async def test_the_store_tail_finds_the_last_records_by_bisection_then_follows(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path}/store.db") as store:
        for n in range(230):
            await store.append("audit", record(f"r{n}", n))
            if n % 3 == 0:
                await store.append("other", {"n": n})  # ids shared with another stream: gaps
        tail = LogTail(store=store, stream="audit", capacity=50)
        await tail.poll()
        assert [r["n"] for r in tail.recent(1000)] == list(range(229, 179, -1))
        await store.append("audit", record("r-new", 999))
        assert await tail.poll() == 1
        assert tail.records_of("r-new")[0]["n"] == 999
        assert tail.records_of("r180") == [] and tail.records_of("r181")  # one in, the oldest out
        assert tail.records_of("r100") == []


def test_a_tail_reads_one_source() -> None:
    with pytest.raises(ValueError):
        LogTail()


# -- live figures ------------------------------------------------------------------------------
def test_quantiles_interpolate_within_buckets_like_prometheus() -> None:
    buckets = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.7, buckets) == pytest.approx(0.01 + 0.09 * 0.5)
    assert quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 0.9)
    assert quantile(0.5, []) is None
    assert quantile(0.99, [(0.01, 1.0), (float("inf"), 2.0)]) == 0.01


def test_live_figures_come_from_the_exported_counters_over_the_window() -> None:
    metrics = Metrics("live")
    red = RedMetrics(metrics)
    now = [1000.0]
    view = LiveView(lambda: read_registry(metrics.registry), clock=lambda: now[0])
    view.sample()
    for n in range(20):
        red.observe("/users.v1.UsersService/GetUser", "2025-06-01", "OK" if n % 4 else "NOT_FOUND", 0.004)
    now[0] += 10
    figures = view.figures(window=60)
    (row,) = figures["methods"]
    assert row["method"] == "/users.v1.UsersService/GetUser"
    assert row["calls"] == 20 and row["rate"] == pytest.approx(2.0)
    assert row["error_rate"] == pytest.approx(0.25)
    assert 1.0 < row["p50_ms"] <= 5.0 and row["p99_ms"] <= 5.0
    metrics.close()


# -- the guard (token mode) --------------------------------------------------------------------
def authenticate(headers: Mapping[str, str]) -> Principal:
    token = headers.get("authorization", "")
    if token == "Bearer admin":
        return Principal("ada", ("playground:admin",), "jwt")
    if token == "Bearer reader":
        return Principal("bob", ("users:read",), "jwt")
    raise Unauthenticated("missing credentials")


@pytest.fixture
def guarded() -> Iterator[str]:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"who": request.scope["modrpc.principal"].subject})

    app = Starlette(routes=[Route("/api/x", echo, methods=["GET", "POST"]), Route("/api/session", echo)])
    admin = start_admin_server("127.0.0.1", 0)
    admin.mount("/pg", Guard(app, open_mode=False, role="playground:admin", authenticate=authenticate))
    yield f"{admin.url}/pg"
    admin.close()


def call(url: str, *, data: bytes | None = None, headers: Mapping[str, str] = {}) -> tuple[int, dict[str, Any], Any]:
    request = urllib.request.Request(url, data=data, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


def test_token_mode_needs_a_token_with_the_role(guarded: str) -> None:
    assert call(f"{guarded}/api/x")[0] == 401
    status, _, body = call(f"{guarded}/api/x", headers={"authorization": "Bearer reader"})
    assert status == 403 and "playground:admin" in body["error"]["message"]
    status, headers, body = call(f"{guarded}/api/x", headers={"authorization": "Bearer admin"})
    assert (status, body) == (200, {"who": "ada"})
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_writes_must_be_json_from_the_page_itself(guarded: str) -> None:
    admin = {"authorization": "Bearer admin"}
    assert call(f"{guarded}/api/x", data=b"a=1", headers=admin)[0] == 415
    json_admin = {**admin, "content-type": "application/json"}
    host = guarded.split("/")[2]
    status, _, body = call(f"{guarded}/api/x", data=b"{}", headers={**json_admin, "origin": "http://evil.example"})
    assert status == 403 and "evil.example" in body["error"]["message"]
    assert call(f"{guarded}/api/x", data=b"{}", headers={**json_admin, "origin": f"http://{host}"})[0] == 200


# -- catalog and codec -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def users() -> Any:
    catalog = VersionCatalog.from_module_dir("users", MODULES_DIR / "users", {"stable": "2025-06-01"})

    class Entry:
        served = ("2025-06-01",)
        retired: frozenset[str] = frozenset()
        cold: frozenset[str] = frozenset()

    Entry.catalog = catalog  # type: ignore[attr-defined]
    return {"users": Entry}


def test_the_diff_marks_name_removed_as_breaking_and_names_the_transformer(users: Any) -> None:
    d = version_diff(users, "users", "2025-01-15", "2025-06-01")
    assert d["breaking"] and d["bridged"] and d["direction"] == "forward"
    assert {"path": "User.name", "kind": "field_removed", "breaking": True, "detail": "required field removed"} in d["changes"]
    (step,) = d["steps"]
    assert step["backward"] == ["CreateUser", "GetUser"] and "def backward_get_user_response" in step["source"]
    assert version_diff(users, "users", "stable", "2025-01-15")["direction"] == "backward"
    with pytest.raises(NotFound):
        version_diff(users, "nope", "a", "b")


def test_the_schema_shows_constraints_and_an_example_that_meets_them(users: Any) -> None:
    schema = version_schema(users, "users", "2025-06-01")
    create = next(m for m in schema["methods"] if m["name"] == "CreateUser")
    rows = {r["name"]: r for r in create["request"]["fields"]}
    assert rows["given_name"]["required"] and "min length 1" in rows["given_name"]["constraints"]
    assert rows["email"]["number"] == 2
    assert create["example"]["email"] == "ada@example.com" and len(create["example"]["given_name"]) >= 1


def test_an_explorer_request_with_a_field_the_version_lacks_is_refused_by_name(users: Any) -> None:
    catalog = users["users"].catalog
    assert encode_request(catalog, "2025-01-15", "CreateUser", {"name": "Ada", "email": "a@example.com"})
    with pytest.raises(InvalidArgument, match="has no field 'given_name'"):
        encode_request(catalog, "2025-01-15", "CreateUser", {"given_name": "Ada"})
    with pytest.raises(InvalidArgument, match="cannot encode"):
        encode_request(catalog, "2025-01-15", "GetUser", {"id": 5})
    with pytest.raises(NotFound):
        encode_request(catalog, "2025-01-15", "DeleteUser", {})


def test_a_timeline_nests_callee_lifecycles_under_the_module_calls_that_made_them() -> None:
    def event(kind: str, name: str, at: float, duration: float | None = None, handler: str = "orders.PlaceOrder") -> dict[str, Any]:
        return {"kind": kind, "name": name, "at": at, "duration_ms": duration, "handler": handler, "error": None}

    records = [
        {"request_id": "r", "method": "/orders.v1.OrdersService/PlaceOrder", "version": "v", "outcome": "ok", "started_at": 100.0, "duration_ms": 30.0,
         "events": [event("lifecycle_start", "orders.PlaceOrder", 100.0), event("module_call", "users.GetUser", 100.010, 8.0),
                    event("module_call", "inventory.Reserve", 100.020, 8.0), event("lifecycle_end", "orders.PlaceOrder", 100.03, 30.0)]},
        {"request_id": "r", "method": "/users.v1.UsersService/GetUser", "version": "v", "outcome": "ok", "started_at": 100.003, "duration_ms": 5.0,
         "events": [event("handler_end", "users.GetUser", 100.007, 3.0, "users.GetUser")]},
        {"request_id": "r", "method": "/inventory.v1.InventoryService/Reserve", "version": "v", "outcome": "NOT_FOUND", "started_at": 100.013, "duration_ms": 5.0,
         "events": [event("handler_error", "inventory.Reserve", 100.017, 3.0, "inventory.Reserve")]},
    ]
    rows = {r["id"]: r for r in timeline("r", [], records)["rows"]}
    calls = {r["label"]: r for r in rows.values() if r["kind"] == "module_call"}
    lifecycles = {r["handler"]: r for r in rows.values() if r["kind"] == "lifecycle"}
    assert lifecycles["users.GetUser"]["parent"] == calls["→ users.GetUser"]["id"]
    assert lifecycles["inventory.Reserve"]["parent"] == calls["→ inventory.Reserve"]["id"]
    assert lifecycles["inventory.Reserve"]["status"] == "NOT_FOUND"
    assert calls["→ users.GetUser"]["start_ms"] == pytest.approx(2.0)
    assert timeline("none", [], [])["found"] is False
