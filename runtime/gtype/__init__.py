"""GType: the runtime's own schema model, the annotation analyzer, validation and the diff engine.

This package imports nothing from the rest of the runtime; everything else builds on it.
"""

from runtime.gtype._errors import FieldViolation, UnsupportedType
from runtime.gtype._model import (
    PRIMITIVES,
    Constraints,
    Field,
    GType,
    Kind,
    Method,
    Schema,
    canonical_json,
    fingerprint,
)

__all__ = [
    "PRIMITIVES",
    "Constraints",
    "Field",
    "FieldViolation",
    "GType",
    "Kind",
    "Method",
    "Schema",
    "UnsupportedType",
    "canonical_json",
    "fingerprint",
]
