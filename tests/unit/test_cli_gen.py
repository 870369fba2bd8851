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
    assert main(["versions", "users", "--root", str(REPO)]) == 0
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
    module = tmp_path / "modules" / "users"
    shutil.copytree(REPO / "modules" / "users" / "versions", module / "versions")
    shutil.copy(REPO / "modules" / "users" / "module.toml", module / "module.toml")
    latest = json.loads((module / "versions" / "2025-06-01.json").read_text())
    latest.update(
        id="2025-07-01", created_at=1751328000.0, parent="2025-06-01", breaking=False, changes=[]
    )
    (module / "versions" / "2025-07-01.json").write_text(json.dumps(latest))
    assert main(["versions", "users", "--root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[:2] == ["2025-06-01", "stable"]
    assert lines[3].split() == ["2025-07-01", "latest", "compatible"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project holding the notifications module's manifest, versions and lock, but no gen/.

    Its module.toml names no handlers, so they come from ``modules.notifications.handlers``
    (the repository's own module): the schema is the real one.
    """
    module = tmp_path / "modules" / "notifications"
    module.mkdir(parents=True)
    for name in ("module.toml", "fields.lock.json"):
        shutil.copy(REPO / "modules" / "notifications" / name, module / name)
    shutil.copytree(REPO / "modules" / "notifications" / "versions", module / "versions")
    return tmp_path


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_gen_writes_what_check_then_accepts_and_matches_the_committed_output(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gen", "--check", "--root", str(project)]) == 1
    err = capsys.readouterr().err
    assert "generated code is stale" in err
    assert "gen/notifications/v2025_01_15/client.py: missing" in err

    assert main(["gen", "--root", str(project)]) == 0
    assert capsys.readouterr().out.splitlines() == ["wrote gen/ proto/"]
    assert main(["gen", "--check", "--root", str(project)]) == 0
    assert "up to date" in capsys.readouterr().out
    # The same inputs give the bytes committed in the repository.
    for tree in ("gen/notifications", "proto/notifications"):
        assert _files(project / tree) == {
            k: v for k, v in _files(REPO / tree).items() if "__pycache__" not in k
        }


def test_gen_refuses_a_lock_with_a_clash_naming_both_fields(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock_path = project / "modules" / "notifications" / "fields.lock.json"
    lock = json.loads(lock_path.read_text())
    fields = lock["messages"]["ListNotificationsResponse"]
    (first, number), *_ = fields.items()
    fields["shadow"] = number
    lock_path.write_text(json.dumps(lock))
    assert main(["gen", "--root", str(project)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modrpc gen: ")
    assert f"{first!r} and 'shadow' both use {number}" in err
    assert not (project / "gen").exists() and not (project / "proto").exists()
