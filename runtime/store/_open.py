"""Choosing the backend from the store URL."""

from __future__ import annotations

import time

from runtime.config import mask_url
from runtime.deadline import Clock
from runtime.errors import InvalidArgument
from runtime.store._postgres import PostgresStore
from runtime.store._protocol import ManifestStore
from runtime.store._sqlite import SqliteStore
from runtime.store._url import POSTGRES_SCHEMES, SQLITE_PREFIX

__all__ = ["open_store"]


def open_store(url: str, *, clock: Clock = time.time) -> ManifestStore:
    """The store at ``url``, not yet connected: start it with ``async with`` (or ``start()``).

    ``sqlite:///path.db`` (relative to the working directory; ``sqlite:////abs/path.db`` is
    absolute) is the embedded default; ``postgresql://user:pass@host:port/db?schema=name`` is
    shared by many hosts. ``clock`` (unix seconds) stamps heartbeats and migrations.

        >>> store = open_store("sqlite:///.modrpc/store.db")
        >>> store.url
        'sqlite:///.modrpc/store.db'

    Raises InvalidArgument, naming the URL (password masked), for any other scheme.
    """
    if url.startswith(SQLITE_PREFIX):
        return SqliteStore(url, clock=clock)
    scheme, sep, _ = url.partition("://")
    if sep and scheme in POSTGRES_SCHEMES:
        return PostgresStore(url, clock=clock)
    raise InvalidArgument(
        f"unsupported store URL {mask_url(url)!r}: expected sqlite:///path/to/store.db "
        "or postgresql://user@host:port/database"
    )
