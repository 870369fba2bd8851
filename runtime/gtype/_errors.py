"""The two error types gtype raises or returns. They know nothing of gRPC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["FieldViolation", "UnsupportedType"]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One validation failure: where (``items[2].sku``), what was expected, and what was found."""

    path: str
    expected: str
    actual: Any

    def describe(self) -> str:
        return f"{self.path or '<root>'}: expected {self.expected}, got {self.actual!r}"


class UnsupportedType(TypeError):
    """The analyzer met an annotation it cannot map to a GType. A bug in the module, not input."""

    def __init__(self, handler: str, field: str, annotation: object, reason: str = "") -> None:
        shown = getattr(annotation, "__name__", None) or repr(annotation)
        msg = f"handler {handler!r}: field {field!r} has unsupported type {shown}"
        if reason:
            msg += f" ({reason})"
        super().__init__(msg)
        self.handler = handler
        self.field = field
        self.annotation = annotation
