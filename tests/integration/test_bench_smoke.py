"""``make bench`` cannot rot: the benchmark's own harness, run with a few hundred calls.

This starts the very servers ``python -m bench`` measures (worker, gateway, bare reference, naive
proxy, embedded gateway) and drives them through the same code, checking only that every call
came back with the right bytes and that every figure the report needs was produced. It asserts
no time: benchmarks are not tests. With h2load installed (``make bench`` installs it) the load
goes through h2load as in a real run; without it, through the harness's grpc.aio driver.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.load import h2load_binary
from bench.measure import GOALS, SMOKE, run
from bench.report import markdown
from bench.topology import echo_call

pytestmark = pytest.mark.timeout(240)

TARGETS = {"bare", "gateway", "gateway_edge", "gateway_grpc", "embedded", "lane_proxy", "proxy", "proxy_bare"}


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    """One smoke run shared by the tests below (starting the servers is most of its time)."""
    driver = "h2load" if h2load_binary() is not None else "grpc"
    return asyncio.run(
        run(SMOKE, rounds=1, nginx=False, warmup=0, verify_calls=50, driver=driver, log=lambda _: None)
    )


def test_every_path_answers_every_call_with_the_echoed_bytes(figures: dict[str, Any]) -> None:
    assert set(figures["verified"]) == TARGETS
    assert all(count == 50 for count in figures["verified"].values()), figures["verified"]
    for name in TARGETS:
        for profile in SMOKE:
            entry = figures["targets"][name][profile.name]
            assert entry["answered"] == entry["requests"] == profile.requests, (name, profile.name, entry)


def test_cpu_is_accounted_to_every_process_on_each_path(figures: dict[str, Any]) -> None:
    roles = {name: set(by["c4/m10"]["cpu_us_per_call"]) for name, by in figures["targets"].items()}
    assert roles == {
        "bare": {"server"},
        "gateway": {"gateway", "worker"},
        "gateway_edge": {"gateway", "worker"},
        "gateway_grpc": {"gateway", "worker"},
        "embedded": {"gateway"},
        "lane_proxy": {"proxy", "worker"},
        "proxy": {"proxy", "worker"},
        "proxy_bare": {"proxy", "server"},
    }
    assert all(us >= 0 for by in figures["targets"].values() for us in by["c4/m10"]["cpu_us_per_call"].values())


def test_every_target_of_the_issue_gets_a_value_and_the_report_names_them(figures: dict[str, Any]) -> None:
    assert [goal["measure"] for goal in figures["goals"]] == [goal.measure for goal in GOALS]
    # The worker alone is measured through nginx (it takes mutual TLS only), not requested here.
    needs_worker = {
        "gateway ÷ worker throughput (c4/m10)", "worker ÷ bare reference throughput (c4/m10)",
        "gateway added mean latency (c1/m1)", "embedded ÷ worker throughput (c4/m10)",
        "worker ÷ bare, like for like: both mutual TLS behind nginx (c4/m10)",
        "worker CPU/call ÷ bare CPU/call, like for like (c4/m10)",
    }  # fmt: skip
    assert all(goal["value"] is not None for goal in figures["goals"] if goal["measure"] not in needs_worker), figures["goals"]
    assert figures["skipped"]["direct"].startswith("workers take mutual TLS only")
    assert set(figures["lane_tls"]) == {"c1", "c40"}
    report = markdown(figures)
    for goal in GOALS:
        assert goal.measure in report
    assert "nginx grpc_pass" in report and "not requested" in report


def test_server_streaming_is_read_on_every_path_the_worker_alone_over_mutual_tls(figures: dict[str, Any]) -> None:
    """The worker alone too: the bench's client dials it with the gateway's certificate."""
    streams = figures["streams"]
    assert set(streams) == {"bare_stream", "direct", "gateway", "gateway_grpc"}
    for name, by_profile in streams.items():
        assert set(by_profile) == {"c1", "c4"}, name
        assert all(entry["per_second"] > 0 for entry in by_profile.values()), name
    assert set(streams["direct"]["c4"]["cpu_us_per_message"]) == {"worker"}
    assert "worker, called directly" in markdown(figures).split("server streaming", 1)[1]


def test_the_measured_request_is_an_echo_call_whose_response_bytes_equal_the_request(tmp_path: Any) -> None:
    call = echo_call(tmp_path)
    assert call.path == "/echo.v1.EchoService/Echo"
    assert call.response == call.request
    assert call.body_file.read_bytes() == b"\x00" + len(call.request).to_bytes(4, "big") + call.request
    assert dict(call.metadata)["x-api-version"] == "2025-01-15"
