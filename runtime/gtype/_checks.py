"""The small checks shared by :func:`validate` and generated validators.

Generated validator modules import these instead of carrying their own copies, so a value gets
exactly the same verdict whichever of the two checks it.

Formats are deliberately small, documented checks rather than full RFC parsers:

* ``email``: a non-empty local part, exactly one ``@``, and a domain with a dot that neither
  starts nor ends the domain; no whitespace anywhere.
* ``uuid``: anything :class:`uuid.UUID` parses from a string (hyphens optional, any case).
* ``url``: ``scheme://host...`` where the scheme is a letter followed by letters, digits, ``+``,
  ``-`` or ``.``, and the host part is not empty; no whitespace anywhere.

Custom validators are plain callables registered under a name (``module:qualname``). A validator
fails a value by returning ``False`` or by raising ``ValueError``, ``TypeError`` or
``AssertionError`` (pydantic's conventions); any other return value passes. A name that was never
registered in this process is skipped: the schema still records it, and the process that owns
the function (the module's worker) enforces it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import date, datetime

__all__ = [
    "check_format",
    "custom_validator_names",
    "is_date",
    "is_datetime",
    "map_key_ok",
    "register_custom_validator",
    "run_custom_validator",
]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s.][^@\s]*\.[^@\s]*[^@\s.]$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#]+[^\s]*$")

_INT_KEY = re.compile(r"^-?[0-9]+$")

_CUSTOM: dict[str, Callable[[object], object]] = {}


def check_format(fmt: str, value: str) -> bool:
    """Whether ``value`` has the well-known ``fmt`` (``email``, ``uuid`` or ``url``).

    >>> check_format("email", "ada@example.org"), check_format("url", "example.org")
    (True, False)
    """
    if fmt == "email":
        return _EMAIL.match(value) is not None
    if fmt == "url":
        return _URL.match(value) is not None
    if fmt == "uuid":
        try:
            uuid.UUID(value)
        except ValueError:
            return False
        return True
    raise ValueError(f"unknown string format {fmt!r}; expected email, uuid or url")


def is_datetime(value: object) -> bool:
    """Whether ``value`` is a datetime: a :class:`datetime` or an ISO-8601 string of one."""
    if isinstance(value, datetime):
        return True
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return False
        return True
    return False


def is_date(value: object) -> bool:
    """Whether ``value`` is a calendar date: a :class:`date` (not a datetime) or its ISO string."""
    if isinstance(value, datetime):
        return False
    if isinstance(value, date):
        return True
    if isinstance(value, str):
        try:
            date.fromisoformat(value)
        except ValueError:
            return False
        return True
    return False


def map_key_ok(key: object, key_type: str) -> bool:
    """Whether ``key`` is a valid key of a map whose keys are ``str`` or ``int``.

    An int-keyed map also takes decimal strings, because JSON object keys are always strings.
    """
    if key_type == "int":
        if isinstance(key, str):
            return _INT_KEY.match(key) is not None
        return isinstance(key, int) and not isinstance(key, bool)
    return isinstance(key, str)


def register_custom_validator(name: str, fn: Callable[[object], object]) -> None:
    """Make the custom validator ``name`` (``module:qualname``) runnable in this process.

    Registering a name again replaces the earlier function, so reloading a module picks up its
    new code.

    >>> register_custom_validator("shop.models:is_upper", lambda v: str(v).isupper())
    """
    if not name:
        raise ValueError("a custom validator needs a non-empty name")
    _CUSTOM[name] = fn


def custom_validator_names() -> tuple[str, ...]:
    """The names registered in this process, sorted."""
    return tuple(sorted(_CUSTOM))


def run_custom_validator(name: str, value: object) -> str | None:
    """Run the validator ``name`` on ``value``: None when it passes (or is not registered).

    On failure the result is the text for a violation's ``expected``: ``a value accepted by
    <name>``, followed by the validator's own message when it raised one.
    """
    fn = _CUSTOM.get(name)
    if fn is None:
        return None
    try:
        verdict = fn(value)
    except (ValueError, TypeError, AssertionError) as exc:
        message = str(exc)
        return f"a value accepted by {name}" + (f" ({message})" if message else "")
    if verdict is False:
        return f"a value accepted by {name}"
    return None
