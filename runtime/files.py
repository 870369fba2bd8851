"""Files only the runtime's user can read: the store, the audit trail, snapshots, module data.

Everything the runtime keeps on disk can hold callers' data (requests in snapshots, principals in
the audit trail, users in a module's database), so it is created ``0600`` in directories created
``0700``, whatever the process's umask. A file that already exists with wider permissions and
belongs to this user is narrowed to ``0600`` when the runtime opens it, so an installation made
before this rule is fixed on its next start; an existing directory is narrowed only when asked
(the runtime's own ``.modrpc``), never a folder a path merely passes through. A serving process
narrows the runtime's own folders whole at start (:func:`private_tree`), so files it only reads
(keys, locks, spools of an older version) are fixed too.

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

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "private_directory", "private_file", "private_tree"]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def _narrow(path: Path, mode: int) -> bool:
    """Take group and other permissions off ``path`` when it is ours and has any; whether it did."""
    with contextlib.suppress(OSError):  # not ours, or gone: leave it to the OS to refuse
        info = path.stat()
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
            path.chmod(stat.S_IMODE(info.st_mode) & mode)
            return True
    return False


def private_tree(root: Path | str) -> int:
    """Take group and other permissions off ``root`` and everything in it that is this user's:
    folders ``0700`` at most, files ``0600`` at most. How many it narrowed (0 when ``root`` is
    missing).

    Only what is the runtime's is touched: symbolic links are not followed (each entry is
    opened ``O_NOFOLLOW`` and changed through that descriptor, so one swapped for a link
    meanwhile is not followed either), and a file with another hard link is left alone (its
    other name may be anywhere). Neither is anything but plain files and folders.

        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "tls").mkdir(); (root / "tls" / "ca.key").touch()
        >>> (root / "tls").chmod(0o755); (root / "tls" / "ca.key").chmod(0o644)
        >>> private_tree(root), oct((root / "tls" / "ca.key").stat().st_mode & 0o777)
        (2, '0o600')
    """
    root = Path(root)
    if root.is_symlink() or not root.is_dir():
        return 0
    narrowed = int(_narrow_entry(root, PRIVATE_DIR_MODE))
    for folder, folders, files in os.walk(root):  # os.walk does not descend into links
        for name in folders:
            narrowed += _narrow_entry(Path(folder, name), PRIVATE_DIR_MODE)
        for name in files:
            narrowed += _narrow_entry(Path(folder, name), PRIVATE_FILE_MODE)
    return narrowed


def _narrow_entry(path: Path, mode: int) -> bool:
    """:func:`_narrow` for :func:`private_tree`: never through a link, never a hard-linked file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # a link (ELOOP), unreadable, or gone: not ours to change
        return False
    try:
        info = os.fstat(fd)
        plain = stat.S_ISDIR(info.st_mode) or (stat.S_ISREG(info.st_mode) and info.st_nlink == 1)
        if not plain or info.st_uid != os.getuid() or not stat.S_IMODE(info.st_mode) & 0o077:
            return False
        os.fchmod(fd, stat.S_IMODE(info.st_mode) & mode)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


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
