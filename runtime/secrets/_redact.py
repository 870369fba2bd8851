"""Keeping secret values out of logs, errors and snapshots (SPEC §6, Property 41).

A :class:`Redactor` remembers every value the secrets manager has handed out and replaces it with
``***`` wherever it turns up: in text (:meth:`Redactor.scrub`), in JSON-like data
(:meth:`Redactor.redact`), in exception messages (:meth:`Redactor.scrub_exception`) and, through
:class:`RedactingFilter`, in log records.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from copy import deepcopy
from typing import Any, TypeVar

from runtime.secrets._secret import MASK, Secret

__all__ = ["RedactingFilter", "Redactor"]

_T = TypeVar("_T")
_E = TypeVar("_E", bound=BaseException)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class Redactor:
    """The set of secret values handed out, and the means to scrub them.

    Thread-safe: values are added under a lock and published as an immutable pattern, so logging
    from other threads never sees a half-built state. Values made only of ``*`` characters (and the
    empty string) are not tracked: they cannot be told apart from the mask itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    @property
    def values(self) -> frozenset[str]:
        """Every value being redacted."""
        return self._values

    def add(self, value: str) -> None:
        """Start redacting ``value``."""
        if not value.strip("*") or value in self._values:
            return
        with self._lock:
            values = self._values | {value}
            # Longest first, so a secret that contains another is masked whole.
            alternatives = sorted(values, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, alternatives)))
            self._values = values

    def scrub(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***``.

        Repeats until nothing matches: masking one value can join the text around it into
        another value (``"ab" + "*c"``), and every pass removes at least one non-``*`` character,
        so this ends.
        """
        pattern = self._pattern
        if pattern is None:
            return text
        while pattern.search(text):
            text = pattern.sub(MASK, text)
        return text

    def redact(self, obj: _T) -> _T:
        """A deep copy of JSON-like ``obj`` with secret values (and any :class:`Secret`) masked.

        Strings are scrubbed, mapping keys included; dicts, lists and tuples are rebuilt; other
        objects are deep-copied as they are.
        """
        return self._redact(obj)  # type: ignore[no-any-return]

    def _redact(self, obj: Any) -> Any:
        if isinstance(obj, Secret):
            return MASK
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, (bool, int, float)) or obj is None:
            return obj
        if isinstance(obj, Mapping):
            return {self._redact(k): self._redact(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._redact(item) for item in obj]
        if isinstance(obj, tuple):
            return tuple(self._redact(item) for item in obj)
        return deepcopy(obj)

    def scrub_exception(self, exc: _E) -> _E:
        """Mask secret values in ``exc``'s message, notes and chained causes, in place.

        Used at the edge before an error message leaves the process (gRPC status details, logs).
        Returns ``exc`` so it can be re-raised: ``raise redactor.scrub_exception(e)``.
        """
        seen: set[int] = set()
        stack: list[BaseException] = [exc]
        while stack:
            current = stack.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            self._scrub_one(current)
            stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
            if isinstance(current, BaseExceptionGroup):
                stack.extend(current.exceptions)
        return exc

    def _scrub_one(self, exc: BaseException) -> None:
        if self._pattern is None:
            return
        exc.args = tuple(self.scrub(a) if isinstance(a, str) else a for a in exc.args)
        message = getattr(exc, "message", None)
        if isinstance(message, str):
            try:
                exc.message = self.scrub(message)  # type: ignore[attr-defined]
            except AttributeError:  # a read-only property on some foreign exception
                pass
        notes = getattr(exc, "__notes__", None)
        if isinstance(notes, list):
            notes[:] = [self.scrub(n) if isinstance(n, str) else n for n in notes]


class RedactingFilter(logging.Filter):
    """A logging filter that masks secret values in a record's message, arguments and traceback.

    Attach it to handlers (``configure_logging(filters=[...])``): filters on a logger do not see
    records propagated from its children. It formats the message once, scrubs it and drops the
    arguments, and formats the traceback into ``exc_text`` (which formatters reuse) scrubbed.
    Records pass through untouched while no secret has been handed out.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self._redactor
        if not redactor.values:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # bad %-arguments: keep both parts, masked
            message = f"{record.msg} {record.args!r}"
        record.msg = redactor.scrub(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redactor.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = redactor.scrub(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRS and isinstance(value, (str, Mapping, list, tuple, Secret)):
                setattr(record, key, redactor.redact(value))
        return True
