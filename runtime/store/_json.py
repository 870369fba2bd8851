"""JSON documents as the store keeps them: checked on the way in so they come back identical.

``json.dumps`` quietly turns ``{1: "a"}`` into ``{"1": "a"}`` and writes ``NaN``, neither of which
comes back as it went in. The store promises to give back exactly what it was given (Property 39),
so documents are checked first and anything that would not survive the trip is refused with an
:class:`~runtime.errors.InvalidArgument` that names where it is. Tuples are accepted as arrays and
come back as lists, which is the one normalisation JSON forces.
"""

from __future__ import annotations

import json
import math
from typing import Any

from runtime.errors import InvalidArgument

__all__ = ["check_document", "check_name", "decode", "encode"]


def check_name(value: object, what: str) -> str:
    """``value`` as an identifier: a non-empty string without NUL, which PostgreSQL cannot store."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise InvalidArgument(f"{what} must not contain NUL characters, got {value!r}")
    _require_utf8(value, what)
    return value


def check_document(value: object, what: str) -> dict[str, Any]:
    """``value`` as a JSON object that survives a round trip, or InvalidArgument naming the path."""
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object (dict), got {type(value).__name__}")
    _check(value, what)
    return value


def _check(value: object, path: str) -> None:
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        _require_utf8(value, path)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(f"{path}: {value!r} has no JSON form")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgument(f"{path}: key {key!r} is not a string; JSON keys are strings")
            _require_utf8(key, path)
            _check(item, f"{path}[{key!r}]")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
        return
    raise InvalidArgument(f"{path}: a {type(value).__name__} has no JSON form")


def encode(value: object) -> str:
    """Compact JSON text of a document :func:`check_document` accepted (so it cannot fail)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def decode(text: str) -> Any:
    return json.loads(text)


def _require_utf8(text: str, what: str) -> None:
    # Python strings may hold lone surrogates; neither SQLite nor PostgreSQL can store them.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"{what} is not valid Unicode: {exc.reason}") from exc
