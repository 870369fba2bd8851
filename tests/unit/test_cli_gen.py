"""``modrpc versions MODULE`` and ``modrpc gen [--check]`` as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.cli import main

REPO = Path(__file__).resolve().parents[2]
MODRPC = Path(sys.executable).parent / "modrpc"


def test_versions_lists_both_users_versions_their_labels_and_the_breaking_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["versions", "users", "--project", str(REPO)]) == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == ["VERSION", "LABELS", "STEP", "FROM", "PREVIOUS"]
    assert first.split() == ["2025-01-15", "-", "first", "version"]
    version, labels, step = second.split(maxsplit=2)
    assert version == "2025-06-01"
    assert labels.split(",") == ["latest", "stable"]
    assert step.startswith("BREAKING: ")
    assert "field_added CreateUser.given_name" in step
    assert "field_removed User.name" in step


def test_versions_of_an_unknown_module_exits_2_naming_it() -> None:
    done = subprocess.run(
        [str(MODRPC), "versions", "nosuch"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "modrpc versions: no module 'nosuch'" in done.stderr
    assert "modules/nosuch/module.toml" in done.stderr


def test_versions_labels_a_compatible_step_as_compatible(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "modrpc.toml").write_text("")
    module = tmp_path / "modules" / "users"
    shutil.copytree(REPO / "modules" / "users" / "versions", module / "versions")
    shutil.copy(REPO / "modules" / "users" / "module.toml", module / "module.toml")
    latest = json.loads((module / "versions" / "2025-06-01.json").read_text())
    latest.update(
        id="2025-07-01", created_at=1751328000.0, parent="2025-06-01", breaking=False, changes=[]
    )
    (module / "versions" / "2025-07-01.json").write_text(json.dumps(latest))
    assert main(["versions", "users", "--project", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[:2] == ["2025-06-01", "stable"]
    assert lines[3].split() == ["2025-07-01", "latest", "compatible"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project holding a copy of the notifications module (code, manifest, versions and
    lock) but no gen/: the schema is the real one."""
    (tmp_path / "modrpc.toml").write_text("")
    shutil.copytree(
        REPO / "modules" / "notifications",
        tmp_path / "modules" / "notifications",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


def gen(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``modrpc gen`` run in the project, as a user runs it (its own process imports the
    project's ``modules`` package, not this repository's)."""
    return subprocess.run(
        [str(MODRPC), "gen", *args], cwd=project, capture_output=True, text=True, timeout=120, check=False
    )


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_gen_writes_what_check_then_accepts_and_matches_the_committed_output(
    project: Path,
) -> None:
    done = gen(project, "--check")
    assert done.returncode == 1
    assert "generated code is stale" in done.stderr
    assert "gen/notifications/v2025_01_15/client.py: missing" in done.stderr

    done = gen(project)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["wrote gen/notifications/ proto/notifications/"]
    done = gen(project, "--check")
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
    # The same inputs give the bytes committed in the repository.
    for tree in ("gen/notifications", "proto/notifications"):
        assert _files(project / tree) == {
            k: v for k, v in _files(REPO / tree).items() if "__pycache__" not in k
        }


def test_gen_refuses_a_lock_with_a_clash_naming_both_fields(project: Path) -> None:
    lock_path = project / "modules" / "notifications" / "fields.lock.json"
    lock = json.loads(lock_path.read_text())
    fields = lock["messages"]["ListNotificationsResponse"]
    (first, number), *_ = fields.items()
    fields["shadow"] = number
    lock_path.write_text(json.dumps(lock))
    done = gen(project)
    assert done.returncode == 2
    err = done.stderr
    assert err.startswith("modrpc gen: ")
    assert f"{first!r} and 'shadow' both use {number}" in err
    assert not (project / "gen").exists() and not (project / "proto").exists()
