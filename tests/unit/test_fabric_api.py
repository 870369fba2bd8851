"""The fabric's public surface and its pure rules: URLs, options, names, headers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import get_current_span

from runtime.config import mask_url
from runtime.errors import InvalidArgument
from runtime.fabric import DLQ_ERROR_HEADER, Message, dead_letter_topic, open_fabric
from runtime.fabric._memory import MemoryFabric
from runtime.fabric._naming import consumer_name, stream_name, subject
from runtime.fabric._nats import NatsFabric
from runtime.fabric._types import (
    MemoryOptions,
    NatsOptions,
    dead_letter_headers,
    inject_trace,
    outgoing_headers,
)

TOKEN = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
TOPICS = st.lists(TOKEN, min_size=1, max_size=4).map(".".join)
NATS_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _isort_key(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions, each alphabetical (ruff's RUF022 order)."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)



def test_open_fabric_picks_the_backend_by_scheme_without_connecting() -> None:
    # No event loop is running here: constructing a fabric must not need one.
    assert isinstance(open_fabric("memory://"), MemoryFabric)
    nats_fabric = open_fabric("nats://127.0.0.1:4222,nats://127.0.0.1:4223", prefix="p1")
    assert isinstance(nats_fabric, NatsFabric)
    assert nats_fabric.options.prefix == "p1"


def test_an_unknown_scheme_is_refused_naming_it_without_the_password() -> None:
    with pytest.raises(InvalidArgument) as caught:
        open_fabric("kafka://svc:s3cret@broker:9092")
    assert "'kafka'" in caught.value.message
    assert "s3cret" not in caught.value.message
    assert "memory://" in caught.value.message and "nats://" in caught.value.message


def test_an_unknown_option_is_refused_naming_it() -> None:
    with pytest.raises(InvalidArgument, match=r"unknown fabric option.*fetch_batch"):
        open_fabric("memory://", fetch_batch=10)  # a NATS-only option
    with pytest.raises(InvalidArgument, match=r"unknown fabric option.*colour"):
        open_fabric("nats://127.0.0.1:4222", colour="blue")


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"capacity": 0}, "capacity"),
        ({"backpressure": "drop"}, "backpressure"),
        ({"max_wait": -1}, "max_wait"),
        ({"max_message_bytes": 0}, "max_message_bytes"),
    ],
)
def test_bad_option_values_are_refused(options: dict[str, object], complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint):
        MemoryOptions.build(options)
    with pytest.raises(InvalidArgument, match=complaint):
        NatsOptions.build(options)


@pytest.mark.parametrize("prefix", ["", "a.b", "has space", "x" * 33, "wild*"])
def test_a_nats_prefix_must_be_a_safe_name(prefix: str) -> None:
    with pytest.raises(InvalidArgument, match="prefix"):
        NatsOptions(prefix=prefix)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://bob:pa55@h:4222", "nats://bob:***@h:4222"),
        ("nats://t0ken@h:4222", "nats://***@h:4222"),
        ("nats://a:x@h1:1, nats://b:y@h2:2", "nats://a:***@h1:1,nats://b:***@h2:2"),
    ],
)
def test_urls_are_masked_for_messages(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@settings(max_examples=200, deadline=None)
@given(TOPICS, TOPICS)
def test_stream_and_consumer_names_are_safe_and_keep_topics_apart(a: str, b: str) -> None:
    for name in (stream_name("modrpc", a), consumer_name(a)):
        assert NATS_NAME.fullmatch(name), name
    assert subject("modrpc", a) == f"modrpc.{a}"
    if a != b:
        assert stream_name("modrpc", a) != stream_name("modrpc", b)
        assert consumer_name(a) != consumer_name(b)


def test_names_that_sanitise_alike_still_differ() -> None:
    assert stream_name("p", "a.b") != stream_name("p", "a_b")
    assert consumer_name("team.a") != consumer_name("team_a")


def test_the_dead_letter_topic_of_a_topic_is_prefixed() -> None:
    assert dead_letter_topic("orders.created") == "dlq.orders.created"


def test_dead_letter_headers_keep_the_originals_and_a_single_line_bounded_error() -> None:
    headers = dead_letter_headers(
        {"tenant": "acme"},
        topic="t",
        group=None,
        attempts=5,
        error="Boom:\n" + "x" * 5000,
        msg_id="id-1",
    )
    assert headers["tenant"] == "acme"
    assert "\n" not in headers[DLQ_ERROR_HEADER]
    assert headers[DLQ_ERROR_HEADER].startswith("Boom: x")
    assert len(headers[DLQ_ERROR_HEADER]) == 1024
    assert headers["modrpc-dlq-group"] == ""
    assert headers["modrpc-dlq-msg-id"] == "id-1"


def test_inject_trace_adds_nothing_without_a_span_and_a_traceparent_with_one() -> None:
    assert inject_trace() == {}
    tracer = TracerProvider().get_tracer("fabric-unit")
    with tracer.start_as_current_span("work") as span:
        headers = inject_trace({"keep": "me"})
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert headers["keep"] == "me"
    assert trace_id in headers["traceparent"]


def test_outgoing_headers_are_none_when_there_is_nothing_to_send() -> None:
    assert outgoing_headers(None, None) is None
    assert outgoing_headers(None, lambda: None) is None
    assert outgoing_headers(None, lambda: "r-1") == {"x-request-id": "r-1"}
    assert outgoing_headers({"x-request-id": "mine"}, lambda: "r-1") == {"x-request-id": "mine"}


@pytest.mark.parametrize("key", ["modrpc-dlq-error", "Nats-Msg-Id", "bad key", ""])
def test_reserved_or_malformed_header_names_are_refused(key: str) -> None:
    with pytest.raises(InvalidArgument):
        outgoing_headers({key: "v"}, None)


def test_a_message_without_trace_headers_has_no_parent_span() -> None:
    msg = Message("t", b"")
    assert msg.traceparent is None and msg.request_id is None and msg.attempt == 1
    assert not get_current_span(msg.trace_context()).get_span_context().is_valid
