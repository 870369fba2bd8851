"""GType: the runtime's own schema model, the annotation analyzer, validation and the diff engine.

Constraints mean what protovalidate's ``buf.validate`` rules mean (``_buf_validate``), since those
rules are how a schema's constraints are published in the generated ``.proto``.

This package imports nothing from the rest of the runtime; everything else builds on it.
"""

from runtime.gtype._analyzer import (
    HandlerTypes,
    analyze_handler,
    analyze_type,
    build_schema,
    method_name,
    stream_item,
)
from runtime.gtype._buf_validate import (
    PROTOVALIDATE_VERSION,
    VALIDATE_PROTO,
    VALIDATE_PROTO_ROOT,
    add_buf_validate,
    options_with_rules,
    rules_of,
    validate_descriptor,
)
from runtime.gtype._checks import is_date, is_datetime, register_custom_validator
from runtime.gtype._compiled import compiled
from runtime.gtype._diff import Change, Diff, diff
from runtime.gtype._errors import FieldViolation, UnsupportedType
from runtime.gtype._model import (
    Constraints,
    Field,
    GType,
    Method,
    Schema,
    canonical_json,
    fingerprint,
)
from runtime.gtype._validate import describe, same_scalar, validate

__all__ = [
    "PROTOVALIDATE_VERSION",
    "VALIDATE_PROTO",
    "VALIDATE_PROTO_ROOT",
    "Change",
    "Constraints",
    "Diff",
    "Field",
    "FieldViolation",
    "GType",
    "HandlerTypes",
    "Method",
    "Schema",
    "UnsupportedType",
    "add_buf_validate",
    "analyze_handler",
    "analyze_type",
    "build_schema",
    "canonical_json",
    "compiled",
    "describe",
    "diff",
    "fingerprint",
    "is_date",
    "is_datetime",
    "method_name",
    "options_with_rules",
    "register_custom_validator",
    "rules_of",
    "same_scalar",
    "stream_item",
    "validate",
    "validate_descriptor",
]
