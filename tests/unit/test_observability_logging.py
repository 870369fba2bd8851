"""JSON-lines logging that carries the request id, handler and version of the call."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from runtime.observability import (
    configure_logging,
    handler_var,
    log_context,
    request_id_var,
    version_var,
)


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """configure_logging changes the root logger; put it back for the rest of the suite."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)



@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("DEBUG", stream=out)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_the_core_fields(json_lines: io.StringIO) -> None:
    logging.getLogger("modrpc.test").warning("disk %s%% full", 93)
    [entry] = lines(json_lines)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "modrpc.test"
    assert entry["message"] == "disk 93% full"
    assert entry["request_id"] is None and entry["handler"] is None and entry["version"] is None
    assert entry["ts"].endswith("Z") and entry["ts"][10] == "T" and len(entry["ts"]) == 24


def test_request_context_comes_from_the_context_variables(json_lines: io.StringIO) -> None:
    log = logging.getLogger("modrpc.test")
    with log_context("req-1", "orders.create", "2025-06-01"):
        assert request_id_var.get() == "req-1"
        log.info("inside")
    log.info("outside")
    inside, outside = lines(json_lines)
    assert (inside["request_id"], inside["handler"], inside["version"]) == (
        "req-1",
        "orders.create",
        "2025-06-01",
    )
    assert outside["request_id"] is None
    assert request_id_var.get() is None and handler_var.get() is None and version_var.get() is None


async def test_concurrent_requests_log_their_own_ids(json_lines: io.StringIO) -> None:
    log = logging.getLogger("modrpc.test")

    async def request(n: int) -> None:
        with log_context(f"req-{n}", f"h.{n}"):
            for step in range(3):
                await asyncio.sleep(0)
                log.info("step", extra={"n": n, "step": step})

    await asyncio.gather(*(request(n) for n in range(10)))
    entries = [e for e in lines(json_lines) if e["logger"] == "modrpc.test"]
    assert len(entries) == 30
    assert all(
        e["request_id"] == f"req-{e['n']}" and e["handler"] == f"h.{e['n']}" for e in entries
    )


def test_extra_fields_and_tracebacks_are_included(json_lines: io.StringIO) -> None:
    log = logging.getLogger("modrpc.test")
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("failed", extra={"order_id": 42, "when": object()})
    [entry] = lines(json_lines)
    assert entry["order_id"] == 42
    assert entry["when"].startswith("<object object")  # not JSON: logged as str
    assert "ValueError: bad value" in entry["exc"]
    assert entry["exc"].startswith("Traceback")


def test_configuring_twice_replaces_the_handler_instead_of_doubling_output() -> None:
    root = logging.getLogger()
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", stream=first)
    handler = configure_logging("INFO", stream=second)
    try:
        logging.getLogger("modrpc.test").info("once")
    finally:
        root.removeHandler(handler)
    assert first.getvalue() == ""
    assert len(lines(second)) == 1
    assert sum(1 for h in root.handlers if h is handler) == 0


def test_level_and_filters_apply_to_every_logger() -> None:
    class DropHealth(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "healthz" not in record.getMessage()

    out = io.StringIO()
    handler = configure_logging("warning", stream=out, filters=[DropHealth()])
    try:
        logging.getLogger("a.b.c").info("not at INFO")
        logging.getLogger("a.b.c").warning("GET /healthz")
        logging.getLogger("x").error("kept")
    finally:
        logging.getLogger().removeHandler(handler)
    assert [e["message"] for e in lines(out)] == ["kept"]


def test_console_lines_show_the_module_level_request_id_and_message() -> None:
    import io
    import logging

    from runtime.observability import MODULE_ATTR, log_context, wants_console
    from runtime.observability._logging import ConsoleFormatter

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(ConsoleFormatter())
    logger = logging.getLogger("modrpc.test.console")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        with log_context("3f1c9a2e77d04b5e", handler="users.CreateUser"):
            logger.warning("user %s created", "ada")
        logger.info("relayed", extra={MODULE_ATTR: "orders"})
    finally:
        logger.removeHandler(handler)
    first, second = out.getvalue().splitlines()
    assert first.split()[1:] == ["WARNING", "users", "3f1c9a2e", "user", "ada", "created"]
    assert second.split()[1:] == ["INFO", "orders", "-", "relayed"]
    assert wants_console("json") is False and wants_console("console") is True
    assert wants_console("auto", io.StringIO()) is False  # not a terminal: JSON


def test_grpc_errors_for_callers_that_went_away_are_debug_not_error() -> None:
    """grpc.aio logs ERROR with a traceback for each answer its caller never took; a caller can
    make thousands, so they are demoted to DEBUG (shown only at that level)."""
    grpc_aio = logging.getLogger("grpc._cython.cygrpc")
    for level, shown in (("INFO", False), ("DEBUG", True)):
        out = io.StringIO()
        configure_logging(level, stream=out)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            grpc_aio.exception("ExecuteBatchError raised in core by servicer method [%s]", "/a.v1.A/B")
        grpc_aio.error("something else went wrong")
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [(r["level"], r["message"][:17]) for r in lines] == [
            *([("DEBUG", "ExecuteBatchError")] if shown else []),
            ("ERROR", "something else we"),
        ]
    configure_logging("INFO", stream=io.StringIO())
    assert len(grpc_aio.filters) == 1, "configured twice, filtered once"
