"""``modrpc versions MODULE`` with the lifecycle flags, against a seeded SQLite store.

The CLI takes "now" from the wall clock, so the store is seeded relative to it: one version idle
for 400 days, one protected by ``stable``, one called an hour ago, and the newest.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.cli import main
from runtime.store import VersionRecord, open_store
from runtime.versions import record_usage
from runtime.versions._lifecycle import DAY

ROOT = Path(__file__).resolve().parents[2]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def seed(url: str) -> None:
    now = time.time()
    async with open_store(url) as store:
        for version_id, age, labels in (
            ("2024-01-01", 400, ()),
            ("2024-06-01", 300, ("stable",)),
            ("2025-01-15", 150, ()),
            ("2025-06-01", 10, ("latest",)),
        ):
            await store.put_version(
                "users",
                VersionRecord(
                    id=version_id, created_at=now - age * DAY, schema={}, fingerprint="sha256:0",
                    manifest={}, labels=labels, metadata={"descriptor": version_id},
                ),
            )  # fmt: skip
        await record_usage(store, "users", {"2025-01-15": 2, "2025-06-01": 7}, now - 3600)


async def contents(url: str) -> list[dict[str, Any]]:
    async with open_store(url) as store:
        return [v.to_json() for v in await store.list_versions("users")]


async def metadata(url: str) -> dict[str, dict[str, Any]]:
    async with open_store(url) as store:
        return {v.id: v.metadata for v in await store.list_versions("users")}


@pytest.fixture
def url(tmp_path: Path) -> str:
    address = f"sqlite:///{tmp_path}/store.db"
    run(seed(address))
    return address


def rows(text: str) -> dict[str, list[str]]:
    """The table rows of the output by version id, split into columns on runs of spaces."""
    return {
        line.split()[0]: line.split(None, 3)
        for line in text.splitlines()
        if line[:4] in ("2024", "2025")
    }


def test_dry_run_prints_each_decision_and_its_reason_and_changes_nothing(url: str) -> None:
    before = run(contents(url))
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "versions", "users", "--dry-run", "--store", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "dry run" in done.stdout and "nothing was changed" in done.stdout
    table = rows(done.stdout)
    assert table["2024-01-01"] == [
        "2024-01-01", "cold", "retire", "cold: never called for 400.0 days, longer than 30.0 days",
    ]  # fmt: skip
    assert table["2024-06-01"][1:3] == ["cold", "keep"]
    assert "protected by label 'stable'" in table["2024-06-01"][3]
    assert table["2025-01-15"] == ["2025-01-15", "warm", "keep", "warm: still in use"]
    assert table["2025-06-01"][1:3] == ["warm", "keep"]
    assert run(contents(url)) == before


def test_the_store_defaults_to_store_url_from_config(url: str, tmp_path: Path) -> None:
    env = {**os.environ, "MODRPC_STORE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "versions", "users", "--dry-run"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert rows(done.stdout)["2024-01-01"][2] == "retire"


def test_retire_marks_the_idle_version_retired_and_the_listing_shows_it(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["versions", "users", "--retire", "--store", url]) == 0
    applied = rows(capsys.readouterr().out)
    assert list(applied) == ["2024-01-01"]
    assert applied["2024-01-01"][1:3] == ["retired", "retired"]
    recorded = run(metadata(url))
    assert recorded["2024-01-01"]["state"] == "retired"
    assert recorded["2025-01-15"]["state"] == "warm"  # states are recorded on --retire
    assert recorded["2024-06-01"]["descriptor"] == "2024-06-01"

    assert main(["versions", "users", "--store", url]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].split() == [
        "VERSION",
        "LABELS",
        "STATE",
        "OVERRIDE",
        "LAST",
        "CALL",
    ]
    table = {line.split()[0]: line.split() for line in listing.splitlines()[1:]}
    assert table["2024-01-01"][1:5] == ["-", "retired", "-", "never"]
    assert table["2024-06-01"][1:3] == ["stable", "cold"]
    assert table["2025-01-15"][2] == "warm"

    assert main(["versions", "users", "--retire", "--store", url]) == 0
    assert "nothing to retire" in capsys.readouterr().out


def test_keep_and_retire_version_overrides_are_recorded_and_honoured(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["versions", "users", "--store", url, "--keep", "2024-01-01",
                 "--retire-version", "2025-01-15", "--retire-version", "2024-06-01"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "record override 'keep' for 2024-01-01" in out
    assert "next `modrpc versions users --retire`" in out
    recorded = run(metadata(url))
    assert recorded["2024-01-01"]["override"] == "keep"
    assert "state" not in recorded["2025-01-15"]  # nothing is retired until --retire

    assert main(["versions", "users", "--retire", "--store", url]) == 0
    recorded = run(metadata(url))
    assert [v for v, m in recorded.items() if m.get("state") == "retired"] == ["2025-01-15"]
    assert "retired by a manual override (it was warm)" in capsys.readouterr().out

    assert main(["versions", "users", "--store", url, "--unkeep", "2024-01-01", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would clear the override of 2024-01-01" in out
    assert rows(out)["2024-01-01"][2] == "retire"
    assert run(metadata(url))["2024-01-01"]["override"] == "keep"  # a dry run writes nothing


def test_an_unknown_version_is_refused_before_any_override_is_written(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = run(contents(url))
    code = main(
        ["versions", "users", "--store", url, "--keep", "2024-01-01", "--keep", "1999-01-01"]
    )
    assert code == 2
    assert "'1999-01-01'" in capsys.readouterr().err
    assert run(contents(url)) == before


def test_one_version_with_two_overrides_is_refused(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["versions", "users", "--store", url, "--keep", "2024-01-01",
                 "--retire-version", "2024-01-01"])  # fmt: skip
    assert code == 2
    assert "two overrides" in capsys.readouterr().err


def test_a_module_missing_from_the_store_is_not_found(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["versions", "orders", "--dry-run", "--store", url]) == 2
    assert "'orders' has no versions" in capsys.readouterr().err


def test_without_lifecycle_flags_versions_still_lists_the_module_folder(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["versions", "users", "--root", str(ROOT)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["VERSION", "LABELS", "STEP", "FROM", "PREVIOUS"]
    assert lines[1].split() == ["2025-01-15", "-", "first", "version"]
