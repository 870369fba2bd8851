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
from runtime.gtype._checks import (
    check_format,
    check_pattern,
    custom_validator_names,
    is_date,
    is_datetime,
    map_key_ok,
    register_custom_validator,
    run_custom_validator,
)
from runtime.gtype._diff import CHANGE_KINDS, Change, Diff, diff
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
from runtime.gtype._validate import (
    CONSTRAINT_ORDER,
    MISSING,
    REQUIRED,
    constraint_text,
    describe,
    field_path,
    key_path,
    map_key_text,
    same_scalar,
    validate,
)

__all__ = [
    "CHANGE_KINDS",
    "CONSTRAINT_ORDER",
    "MISSING",
    "PRIMITIVES",
    "PROTOVALIDATE_VERSION",
    "REQUIRED",
    "VALIDATE_PROTO",
    "VALIDATE_PROTO_ROOT",
    "Change",
    "Constraints",
    "Diff",
    "Field",
    "FieldViolation",
    "GType",
    "HandlerTypes",
    "Kind",
    "Method",
    "Schema",
    "UnsupportedType",
    "add_buf_validate",
    "analyze_handler",
    "analyze_type",
    "build_schema",
    "canonical_json",
    "check_format",
    "check_pattern",
    "constraint_text",
    "custom_validator_names",
    "describe",
    "diff",
    "field_path",
    "fingerprint",
    "is_date",
    "is_datetime",
    "key_path",
    "map_key_ok",
    "map_key_text",
    "method_name",
    "options_with_rules",
    "register_custom_validator",
    "rules_of",
    "run_custom_validator",
    "same_scalar",
    "validate",
    "validate_descriptor",
]
