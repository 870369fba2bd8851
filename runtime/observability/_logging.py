"""JSON-lines logs that carry the request id, handler and version of the call being served.

The ids live in context variables set once per request (:func:`log_context`); the formatter
reads them, so no code has to pass them to every log call and concurrent requests never see each
other's ids.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import IO, Any

__all__ = [
    "ConsoleFormatter",
    "JsonFormatter",
    "configure_logging",
    "handler_var",
    "log_context",
    "request_id_var",
    "version_var",
]

request_id_var: ContextVar[str | None] = ContextVar("modrpc_request_id", default=None)
"""The id of the request being served in this task, or ``None`` outside a request."""
handler_var: ContextVar[str | None] = ContextVar("modrpc_handler", default=None)
"""The handler id (``module.method``) being served in this task."""
version_var: ContextVar[str | None] = ContextVar("modrpc_version", default=None)
"""The resolved module version being served in this task."""

# Attributes every LogRecord has; anything else came from ``extra=`` and is logged as a field.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_CORE = frozenset({"ts", "level", "logger", "message"})
_MARK = "_modrpc_json_handler"
MODULE_ATTR = "modrpc_module"
"""A record attribute naming the module a line is about (set on lines relayed from a worker)."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line.

    Fields: ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message``,
    ``request_id``, ``handler``, ``version``, every ``extra=`` field, and ``exc`` (the formatted
    traceback) when there is one. Values that are not JSON become their ``str``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
            "handler": handler_var.get(),
            "version": version_var.get(),
        }
        for key, value in record.__dict__.items():
            # An explicit extra=request_id (etc.) wins over the context; the core four never move.
            if key not in _RECORD_ATTRS and key not in _CORE:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """One readable line per record, for a person at a terminal.

    ``16:27:05.030 INFO    users         3f1c9a2e  user created``: local time, level, the module the
    line is about (or the component: gateway, up, worker), the request id's first 8 characters
    (``-`` outside a request), the message, and the traceback under it when there is one.
    """

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        line = (
            f"{when} {record.levelname:<7} {_source(record):<13} "
            f"{(request_id or '-')[:8]:<8}  {record.getMessage()}"
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def _source(record: logging.LogRecord) -> str:
    module = getattr(record, MODULE_ATTR, None)
    if module:
        return str(module)
    handler = getattr(record, "handler", None) or handler_var.get()
    if handler:
        return str(handler).partition(".")[0]
    name = record.name.removeprefix("modrpc.")
    return name or "modrpc"


def wants_console(choice: str, stream: IO[str] | None = None) -> bool:
    """``log_format`` ``auto`` means readable lines on a terminal and JSON anywhere else."""
    if choice != "auto":
        return choice == "console"
    target = stream if stream is not None else sys.stderr
    isatty = getattr(target, "isatty", None)
    return bool(isatty and isatty())


class CallerGoneFilter(logging.Filter):
    """Demotes to DEBUG grpc.aio's ERROR, with a traceback, for each call whose answer could not
    be sent because its caller had gone (``ExecuteBatchError`` on the call's last batch).

    A caller makes as many of these as it likes (hold answers with a closed window, then hang
    up); they say nothing about the server, and at ERROR they would bury the lines that do.
    """

    PREFIX = "ExecuteBatchError raised in core by servicer method"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and str(record.msg).startswith(self.PREFIX):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def configure_logging(
    level: str | int = "INFO",
    *,
    stream: IO[str] | None = None,
    filters: Sequence[logging.Filter] = (),
    console: bool = False,
) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) as JSON lines, or as readable
    lines with ``console`` (:class:`ConsoleFormatter`).

    ``filters`` are attached to the handler, so they see records from every logger; pass the
    secrets manager's ``RedactingFilter`` here. Calling it again replaces the handler installed
    before instead of adding a second one. Returns the handler.

        >>> import io
        >>> out = io.StringIO()
        >>> _ = configure_logging("INFO", stream=out)
        >>> logging.getLogger("demo").info("hello")
        >>> json.loads(out.getvalue())["message"]
        'hello'
    """
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, _MARK, False):
            root.removeHandler(existing)
            existing.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _MARK, True)
    handler.setFormatter(ConsoleFormatter() if console else JsonFormatter())
    for log_filter in filters:
        handler.addFilter(log_filter)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    grpc_aio = logging.getLogger("grpc._cython.cygrpc")
    if not any(isinstance(f, CallerGoneFilter) for f in grpc_aio.filters):
        grpc_aio.addFilter(CallerGoneFilter())
    return handler


@contextlib.contextmanager
def log_context(
    request_id: str | None, handler: str | None = None, version: str | None = None
) -> Iterator[None]:
    """Set the request id, handler and version for the logs of the code inside the block."""
    tokens = (
        request_id_var.set(request_id),
        handler_var.set(handler),
        version_var.set(version),
    )
    try:
        yield
    finally:
        version_var.reset(tokens[2])
        handler_var.reset(tokens[1])
        request_id_var.reset(tokens[0])
