"""``private_file`` on a database this process has open must not take its locks away.

Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
included; a database whose locks silently vanish can be corrupted by another process. This
happened: a worker's outbox relay had the users database open when the users repository, opened
second, made it private.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from runtime.files import private_file, private_tree

TRY_TO_WRITE = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
try:
    db.execute("BEGIN IMMEDIATE")
except sqlite3.OperationalError as exc:
    print("locked" if "locked" in str(exc) else exc)
else:
    print("got the write lock")
"""


def other_process_writes(path: Path) -> str:
    return subprocess.run(
        [sys.executable, "-c", TRY_TO_WRITE, str(path)], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()


def test_making_an_open_database_private_keeps_its_locks(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # this process holds the write lock
    assert other_process_writes(path) == "locked"
    private_file(path)
    assert other_process_writes(path) == "locked", "the write lock survived"
    holder.execute("ROLLBACK")
    holder.close()


def test_a_missing_file_is_created_private(tmp_path: Path) -> None:
    path = private_file(tmp_path / "new" / "data.db")
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o600


def test_a_private_tree_leaves_links_and_hard_linked_files_alone(tmp_path: Path) -> None:
    """What a link or a second hard link leads to may be anywhere: it is not the runtime's."""
    outside, tree = tmp_path / "outside", tmp_path / "tree"
    outside.mkdir()
    tree.mkdir()
    (outside / "shared").write_text("x")
    (outside / "linked").write_text("x")
    (tree / "own").write_text("x")
    (tree / "to-outside").symlink_to(outside / "shared")
    (tree / "folder-link").symlink_to(outside)
    os.link(outside / "linked", tree / "hard")
    for path in (outside, outside / "shared", outside / "linked", tree, tree / "own"):
        path.chmod(0o755 if path.is_dir() else 0o644)

    assert private_tree(tree) == 2  # the folder and its own file
    assert {p.name: stat.S_IMODE(p.lstat().st_mode) for p in (tree, tree / "own")} == {"tree": 0o700, "own": 0o600}
    assert [stat.S_IMODE(p.stat().st_mode) for p in (outside, outside / "shared", outside / "linked")] == [0o755, 0o644, 0o644]
