"""Files only the runtime's user can read: the store, the audit trail, snapshots, module data.

Everything the runtime keeps on disk can hold callers' data (requests in snapshots, principals in
the audit trail, users in a module's database), so it is created ``0600`` in directories created
``0700``, whatever the process's umask. A file that already exists with wider permissions and
belongs to this user is narrowed to ``0600`` when the runtime opens it, so an installation made
before this rule is fixed on its next start; an existing directory is narrowed only when asked
(the runtime's own ``.modrpc``), never a folder a path merely passes through.

    >>> import tempfile, pathlib, stat
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> path = private_file(root / "state" / "data.db")
    >>> oct(stat.S_IMODE(path.stat().st_mode)), oct(stat.S_IMODE(path.parent.stat().st_mode))
    ('0o600', '0o700')
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "private_directory", "private_file"]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def _narrow(path: Path, mode: int) -> None:
    """Take group and other permissions off ``path`` when it is ours and has any."""
    with contextlib.suppress(OSError):  # not ours, or gone: leave it to the OS to refuse
        info = path.stat()
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
            path.chmod(stat.S_IMODE(info.st_mode) & mode)


def private_directory(path: Path | str, *, narrow_existing: bool = False) -> Path:
    """``path`` as a directory, created (with its missing parents) ``0700``; returns it.

    ``narrow_existing``: also take group and other permissions off ``path`` itself when it
    already existed (for a directory the runtime owns, such as ``.modrpc``).
    """
    path = Path(path)
    missing = []
    parent = path
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it first
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        _narrow(directory, PRIVATE_DIR_MODE)  # mkdir's mode passes through the umask only
    if narrow_existing:
        _narrow(path, PRIVATE_DIR_MODE)
    return path


def private_file(path: Path | str) -> Path:
    """``path`` as a file that exists, created ``0600`` in a private directory; returns it.

    Call it before a library (sqlite3) opens the file, so the file never exists with the
    library's default permissions even for a moment; SQLite gives its ``-wal`` and ``-shm``
    files the permissions of the database file.
    """
    path = Path(path)
    private_directory(path.parent)
    # Created only when missing (O_EXCL), and an existing file is never opened here: closing any
    # descriptor of a file drops every POSIX lock this process holds on it, so opening and
    # closing a database another connection of this process has open would take its SQLite
    # locks away and let other processes corrupt it.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    _narrow(path, PRIVATE_FILE_MODE)
    return path
