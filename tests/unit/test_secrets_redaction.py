"""Secret values are masked in data, exception messages and logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from runtime.errors import InternalError
from runtime.observability import configure_logging
from runtime.secrets import RedactingFilter, Secret, SecretsManager
from runtime.secrets._providers import EnvProvider
from runtime.secrets._redact import Redactor

VALUE = "pa55-w0rd-xyz"


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


async def manager_with_secret() -> SecretsManager:
    manager = SecretsManager([EnvProvider(environ={"MODRPC_SECRET_DB": VALUE})], ttl=30)
    await manager.get("db")
    return manager


async def test_redact_masks_values_anywhere_in_json_like_data_and_copies() -> None:
    manager = await manager_with_secret()
    data = {
        "dsn": f"postgresql://app:{VALUE}@db/app",
        VALUE: [VALUE, 1, None, True, {"deep": (VALUE, 2.5)}],
        "secret": Secret("db", VALUE),
    }
    redacted = manager.redact(data)
    assert redacted == {
        "dsn": "postgresql://app:***@db/app",
        "***": ["***", 1, None, True, {"deep": ("***", 2.5)}],
        "secret": "***",
    }
    assert data["dsn"] == f"postgresql://app:{VALUE}@db/app"  # the original is untouched


def test_a_value_containing_another_is_masked_whole() -> None:
    redactor = Redactor()
    redactor.add("abc")
    redactor.add("abcdef")
    assert redactor.scrub("x abcdef y abc") == "x *** y ***"


def test_masking_that_joins_text_into_another_value_is_masked_again() -> None:
    redactor = Redactor()
    redactor.add("ab")
    redactor.add("*c")
    # "abc" -> "***c", which now contains "*c" -> "**" + "***".
    assert redactor.scrub("abc") == "*****"


def test_empty_and_all_star_values_are_not_tracked() -> None:
    redactor = Redactor()
    redactor.add("")
    redactor.add("**")
    assert redactor.values == frozenset()
    assert redactor.scrub("** text **") == "** text **"


async def test_exception_messages_and_their_causes_are_scrubbed_in_place() -> None:
    manager = await manager_with_secret()
    try:
        try:
            raise ValueError(f"bad password {VALUE}")
        except ValueError as inner:
            error = InternalError(f"connect failed with {VALUE}")
            error.add_note(f"note {VALUE}")
            raise error from inner
    except InternalError as exc:
        scrubbed = manager.redactor.scrub_exception(exc)
    assert scrubbed is error
    assert str(error) == "connect failed with ***"
    assert error.message == "connect failed with ***"
    assert error.__notes__ == ["note ***"]
    assert str(error.__cause__) == "bad password ***"


async def test_log_records_lose_the_value_in_message_args_and_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = await manager_with_secret()
    caplog.handler.addFilter(manager.logging_filter())
    log = logging.getLogger("test.secrets")
    with caplog.at_level(logging.INFO, logger="test.secrets"):
        log.info("connecting with %s to %s", VALUE, "db")
        log.info(f"inline {VALUE}")
        log.warning("extra field", extra={"password": VALUE, "nested": {"k": [VALUE]}})
        try:
            raise RuntimeError(f"auth failed for {VALUE}")
        except RuntimeError:
            log.exception("query failed")
    assert len(caplog.records) == 4
    assert VALUE not in caplog.text
    assert "connecting with *** to db" in caplog.text
    assert "auth failed for ***" in caplog.text
    for record in caplog.records:
        assert VALUE not in record.getMessage()
        assert VALUE not in repr(vars(record).get("password", ""))
        assert VALUE not in repr(vars(record).get("nested", ""))


async def test_json_logs_carry_no_secret_value() -> None:
    manager = await manager_with_secret()
    out = io.StringIO()
    handler = configure_logging("INFO", stream=out, filters=[manager.logging_filter()])
    try:
        log = logging.getLogger("test.secrets.json")
        log.error("value is %s", VALUE, extra={"dsn": f"pg://u:{VALUE}@h"})
        try:
            raise KeyError(VALUE)
        except KeyError:
            log.exception("lookup failed")
    finally:
        logging.getLogger().removeHandler(handler)
    text = out.getvalue()
    assert VALUE not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["message"] == "value is ***"
    assert lines[0]["dsn"] == "pg://u:***@h"
    assert "KeyError: '***'" in lines[1]["exc"]


def test_filter_passes_records_untouched_while_nothing_is_handed_out() -> None:
    record = logging.makeLogRecord({"msg": "x=%s", "args": ("y",)})
    assert RedactingFilter(Redactor()).filter(record) is True
    assert record.msg == "x=%s" and record.args == ("y",)
