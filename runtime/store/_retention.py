"""The query both backends prune a log stream by size with, written once.

Entries are kept newest first until their sizes add up past the budget: the newest entry at which
the running total (newest to oldest) passes ``max_bytes`` is the first to go, with everything
older. One window function over the ``(stream, id)`` index, in SQLite (3.25+) and PostgreSQL.
"""

from __future__ import annotations

__all__ = ["newest_past_budget"]

_QUERY = (
    "SELECT id FROM (SELECT id, SUM(size) OVER (ORDER BY id DESC) AS newer"
    " FROM log WHERE stream = {stream}) AS kept WHERE newer > {budget} ORDER BY id DESC LIMIT 1"
)


def newest_past_budget(style: str) -> str:
    """The query with ``?`` (SQLite) or ``$1``/``$2`` (PostgreSQL) parameters: stream, max bytes."""
    if style == "qmark":
        return _QUERY.format(stream="?", budget="?")
    return _QUERY.format(stream="$1", budget="$2")
