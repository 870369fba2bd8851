"""The small checks shared by :func:`validate` and generated validators.

Generated validator modules import these instead of carrying their own copies, so a value gets
exactly the same verdict whichever of the two checks it.

Formats and patterns mean what protovalidate's ``buf.validate`` rules mean, because those rules
are what the generated ``.proto`` publishes (see ``_buf_validate``), and protovalidate itself
judges them:

* ``email``: ``string.email``, the HTML standard's definition of a valid email address.
* ``uuid``: ``string.uuid``, 8-4-4-4-12 hexadecimal digits with hyphens, any case.
* ``url``: ``string.uri``, an absolute URI as RFC 3986 defines it (``scheme:...``).
* ``pattern``: ``string.pattern``, an RE2 expression that must match somewhere in the value.

Custom validators are plain callables registered under a name (``module:qualname``). A validator
fails a value by returning ``False`` or by raising ``ValueError``, ``TypeError`` or
``AssertionError`` (pydantic's conventions); any other return value passes. A name that was never
registered in this process is skipped: the schema still records it, and the process that owns
the function (the module's worker) enforces it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime

from runtime.gtype._buf_validate import format_ok, pattern_ok

__all__ = [
    "check_format",
    "check_pattern",
    "custom_validator_names",
    "is_date",
    "is_datetime",
    "map_key_ok",
    "register_custom_validator",
    "run_custom_validator",
]


_INT_KEY = re.compile(r"^-?[0-9]+$")

_CUSTOM: dict[str, Callable[[object], object]] = {}


def check_format(fmt: str, value: str) -> bool:
    """Whether ``value`` has the well-known ``fmt`` (``email``, ``uuid`` or ``url``).

    >>> check_format("email", "ada@example.org"), check_format("url", "example.org")
    (True, False)
    """
    return format_ok(fmt, value)


def check_pattern(pattern: str, value: str) -> bool:
    """Whether the RE2 ``pattern`` matches somewhere in ``value``.

    >>> check_pattern(r"^[a-z]+$", "abc"), check_pattern(r"^[a-z]+$", "abc\n")
    (True, False)
    """
    return pattern_ok(pattern, value)


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
