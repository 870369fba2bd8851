"""The short fault suite inside ``make test``: real processes, private servers, real faults.

``make faults`` plays every scenario; this plays the short list (a worker killed, a worker
hung, NATS down, PostgreSQL down long enough to make every worker look stale) and requires every
row to hold: no failed idempotent call, no lost event, no call both saved and failed. Locally it
skips when a server binary is missing; under ``CI=true`` that is a failure.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.faults.scenarios import SHORT, Row, run, table
from tests.faults.services import missing_tools
from tests.services import in_ci

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


async def test_the_short_fault_suite_loses_no_idempotent_call_and_no_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = missing_tools()
    if missing:
        message = f"the fault suite needs {', '.join(missing)} on PATH"
        if in_ci():
            pytest.fail(message + " (CI=true: the fault suite is mandatory)")
        pytest.skip(message)
    caplog.set_level(logging.ERROR)  # the suite's own fabric client reports the NATS outage
    rows: list[Row] = await run(tmp_path, SHORT, report=lambda row: None)
    print("\n" + table(rows))
    assert [row.scenario for row in rows if not row.ok] == [], table(rows)
    assert all(row.calls > 100 for row in rows), "every scenario ran under load"
    assert all(row.published > 0 and row.delivered == row.published for row in rows)
