"""The one place where sqlite3 and asyncpg errors become runtime errors.

Both backends run every operation inside :func:`store_errors`. A lost or refused connection, a
locked database or a timeout is :class:`~runtime.errors.Unavailable` (retrying later may work);
anything else the database reports is :class:`~runtime.errors.InternalError` (the store or its
schema is broken). Runtime errors raised on purpose (``NotFound``, ``InvalidArgument``) pass
through untouched, and so does cancellation, which is never an error to translate.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from runtime.errors import InternalError, ModrpcError, Unavailable

__all__ = ["store_errors", "translate"]

# SQLite result codes that mean "cannot get at the database now", not "the database is wrong".
_SQLITE_UNAVAILABLE = frozenset(
    (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    )
)
"""Primary codes; extended codes (``SQLITE_BUSY_TIMEOUT``...) carry them in their low byte."""

_PG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable host, timed out
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # the connection or pool was closed under us
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.LockNotAvailableError,
    asyncpg.QueryCanceledError,  # statement_timeout / lock_timeout
    asyncpg.DeadlockDetectedError,  # the server aborted one of two transactions: try it again
    asyncpg.SerializationError,
)


def translate(exc: Exception, url: str, *, connecting: bool = False) -> ModrpcError:
    """The runtime error for a failure of the store at ``url`` (already masked).

    While ``connecting``, every failure is Unavailable: a wrong password or a missing database
    means the store cannot be reached, which is how SPEC section 9 names that case.
    """
    if isinstance(exc, ModrpcError):
        return exc
    if connecting:
        return Unavailable(f"manifest store {url} is unavailable: {type(exc).__name__}: {exc}")
    if isinstance(exc, sqlite3.Error):
        # Errors sqlite3 raises itself (a closed connection, say) carry no code: a bug.
        code: int | None = getattr(exc, "sqlite_errorcode", None)
        if code is not None and (code & 0xFF) in _SQLITE_UNAVAILABLE:
            return Unavailable(f"manifest store {url} is unavailable: {exc}")
        return InternalError(f"manifest store {url} failed: {type(exc).__name__}: {exc}")
    if isinstance(exc, _PG_UNAVAILABLE):
        return Unavailable(f"manifest store {url} is unavailable: {type(exc).__name__}: {exc}")
    return InternalError(f"manifest store {url} failed: {type(exc).__name__}: {exc}")


@contextmanager
def store_errors(url: str, *, connecting: bool = False) -> Iterator[None]:
    """Run the body, turning database and connection errors into runtime errors (``from`` them).

    ``OSError`` covers refused connections, timeouts (``TimeoutError`` is one) and folders that
    cannot be created.
    """
    try:
        yield
    except ModrpcError:
        raise
    except (sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise translate(exc, url, connecting=connecting) from exc
