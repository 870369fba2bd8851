"""Store URLs: which backend, where, and how to name the URL in messages without its password.

``sqlite:///relative/path.db`` is relative to the working directory and ``sqlite:////abs/path.db``
is absolute (three slashes, then the path), as in SQLAlchemy. ``postgresql://`` URLs are libpq
style and go to asyncpg, less the ``schema`` query option, which names the PostgreSQL schema the
store's tables live in (default ``public``) and which asyncpg would otherwise send to the server
as a setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from runtime.config import mask_url
from runtime.errors import InvalidArgument

__all__ = ["DEFAULT_URL", "PostgresTarget", "postgres_target", "sqlite_path"]

DEFAULT_URL = "sqlite:///.modrpc/store.db"
"""The embedded default: a SQLite file under ``.modrpc/`` in the working directory."""

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")


def sqlite_path(url: str) -> Path:
    """The database file a ``sqlite:///`` URL names."""
    raw = url[len(SQLITE_PREFIX) :]
    path, _, query = raw.partition("?")
    if query:
        raise InvalidArgument(f"store URL {url!r}: SQLite URLs take no options")
    if not path:
        raise InvalidArgument(f"store URL {url!r} names no database file")
    if path == ":memory:":
        # The store's watch reads through a second connection, which a private in-memory
        # database cannot have.
        raise InvalidArgument(f"store URL {url!r}: an in-memory SQLite store cannot be watched")
    return Path(path)


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """What asyncpg needs: the DSN without the store's own options, and the schema to use."""

    dsn: str
    schema: str


def postgres_target(url: str) -> PostgresTarget:
    """Split the store's ``schema`` option off a PostgreSQL URL and check the schema name."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- parsing the port is the check
    except ValueError as exc:
        raise InvalidArgument(f"store URL {mask_url(url)!r}: {exc}") from exc
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in pairs if key == "schema"]
    schema = schemas[-1] if schemas else "public"
    if not _SCHEMA_NAME.fullmatch(schema):
        raise InvalidArgument(
            f"store URL {mask_url(url)!r}: schema {schema!r} must be a plain identifier "
            "(letters, digits, underscore; at most 50 characters)"
        )
    rest = urlencode([(key, value) for key, value in pairs if key != "schema"])
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
    return PostgresTarget(dsn=dsn, schema=schema)
