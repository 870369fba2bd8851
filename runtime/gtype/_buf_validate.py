"""buf.validate (protovalidate): the language a schema's constraints are published in.

Every constraint a GType can carry that protobuf tooling can see (requiredness, lengths, ranges,
patterns, formats, allowed values) is written into the generated ``.proto`` as a ``buf.validate``
field rule, so any protovalidate implementation, in any language, enforces what the runtime
enforces. Two of those rules have semantics that no short Python check reproduces exactly: a
``pattern`` is an RE2 expression (``$`` is the very end, ``\\d`` is ASCII) and the ``email``,
``uuid`` and ``uri`` formats follow protovalidate's own definitions. So :func:`pattern_ok` and
:func:`format_ok` ask protovalidate itself, on a one-field message carrying the same rule: one
engine decides, and the runtime's verdict cannot drift from any client's.

The rules' own schema is upstream's ``buf/validate/validate.proto``, vendored byte for byte at
:data:`PROTOVALIDATE_VERSION` under ``proto/`` next to this file (buf cannot fetch its
``buf.build/bufbuild/protovalidate`` dependency offline). ``modrpc gen`` copies it beside every
version's ``.proto``, and :func:`validate_descriptor` compiles it once per process with the
protoc that grpcio-tools ships, so what is served by reflection is what is committed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    message,
    message_factory,
    timestamp_pb2,
)

__all__ = [
    "FORMAT_RULES",
    "PROTOVALIDATE_VERSION",
    "VALIDATE_PROTO",
    "VALIDATE_PROTO_ROOT",
    "add_buf_validate",
    "format_ok",
    "options_with_rules",
    "pattern_error",
    "pattern_ok",
    "rules_of",
    "validate_descriptor",
]

PROTOVALIDATE_VERSION = "v1.2.2"
"""The upstream release (bufbuild/protovalidate, tag v1.2.2) the vendored ``validate.proto`` is."""
VALIDATE_PROTO = "buf/validate/validate.proto"
"""Its import path, as generated ``.proto`` files import it."""
VALIDATE_PROTO_ROOT = Path(__file__).parent / "proto"
"""The include root holding the vendored ``buf/validate/validate.proto``."""

_WELL_KNOWN = (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2)
FORMAT_RULES: dict[str, str] = {"email": "email", "uuid": "uuid", "url": "uri"}
"""GType string format → the ``buf.validate`` ``StringRules`` field that defines it."""


@functools.cache
def validate_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The vendored ``validate.proto`` compiled (once per process) into its descriptor."""
    from grpc_tools import protoc

    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    with tempfile.TemporaryDirectory(prefix="modrpc-buf-validate-") as tmp:
        out = os.path.join(tmp, "validate.binpb")
        code = protoc.main(
            ["protoc", f"-I{VALIDATE_PROTO_ROOT}", f"-I{include}", f"--descriptor_set_out={out}", VALIDATE_PROTO]
        )
        if code != 0:
            raise RuntimeError(f"protoc could not compile the vendored {VALIDATE_PROTO} (exit {code})")
        files = descriptor_pb2.FileDescriptorSet.FromString(Path(out).read_bytes())
    (fdp,) = [f for f in files.file if f.name == VALIDATE_PROTO]
    return fdp


def add_buf_validate(pool: descriptor_pool.DescriptorPool) -> None:
    """Add ``validate.proto`` and the well-known files it imports (those not there yet) to ``pool``."""
    for module in _WELL_KNOWN:
        try:
            pool.FindFileByName(module.DESCRIPTOR.name)
        except KeyError:
            pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    pool.Add(validate_descriptor())


@functools.cache
def _rules_types() -> tuple[type[message.Message], type[message.Message], Any, Any]:
    """FieldOptions and OneofOptions classes that know the ``buf.validate`` extensions."""
    pool = descriptor_pool.DescriptorPool()
    add_buf_validate(pool)
    field_options = message_factory.GetMessageClass(pool.FindMessageTypeByName("google.protobuf.FieldOptions"))
    oneof_options = message_factory.GetMessageClass(pool.FindMessageTypeByName("google.protobuf.OneofOptions"))
    return (
        field_options,
        oneof_options,
        pool.FindExtensionByName("buf.validate.field"),
        pool.FindExtensionByName("buf.validate.oneof"),
    )


def options_with_rules(fill: Callable[[Any], None], *, oneof: bool = False) -> bytes:
    """Serialized ``FieldOptions`` (or ``OneofOptions``) whose ``buf.validate`` rules ``fill``
    sets; empty when ``fill`` sets nothing.

    ``fill`` gets the ``buf.validate.FieldRules`` (or ``OneofRules``) message to set fields on.
    The bytes parse into ``descriptor_pb2.FieldOptions``, which keeps the extension as an
    unknown field: descriptors carry it to protoc, reflection and protovalidate unchanged.
    """
    field_options, oneof_options, field_ext, oneof_ext = _rules_types()
    options = oneof_options() if oneof else field_options()
    fill(options.Extensions[oneof_ext if oneof else field_ext])
    return options.SerializeToString(deterministic=True)


def rules_of(options: descriptor_pb2.FieldOptions | descriptor_pb2.OneofOptions) -> Any | None:
    """The ``buf.validate`` rules message in ``options``, or None when it has none."""
    field_options, oneof_options, field_ext, oneof_ext = _rules_types()
    oneof = isinstance(options, descriptor_pb2.OneofOptions)
    parsed = (oneof_options if oneof else field_options).FromString(options.SerializeToString())
    ext = oneof_ext if oneof else field_ext
    return parsed.Extensions[ext] if parsed.HasExtension(ext) else None


@functools.lru_cache(maxsize=512)
def _checker(rule: str, argument: str) -> type[message.Message]:
    """A message ``Check… { optional string value = 1 [(buf.validate.field).string.<rule>] }``."""

    def fill(rules: Any) -> None:
        if rule == "pattern":
            rules.string.pattern = argument
        else:
            setattr(rules.string, rule, True)

    # protovalidate caches what it compiles by message name, so every rule gets its own name.
    key = hashlib.sha256(f"{rule}\0{argument}".encode()).hexdigest()[:24]
    fdp = descriptor_pb2.FileDescriptorProto(
        name=f"modrpc/check_{key}.proto", package="modrpc.check", syntax="proto3", dependency=[VALIDATE_PROTO]
    )
    msg = fdp.message_type.add(name=f"Check{key}")
    msg.oneof_decl.add(name="_value")
    fd = msg.field.add(
        name="value", json_name="value", number=1, oneof_index=0, proto3_optional=True,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )  # fmt: skip
    fd.options.ParseFromString(options_with_rules(fill))
    pool = descriptor_pool.DescriptorPool()
    add_buf_validate(pool)
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"modrpc.check.Check{key}"))


def _message(rule: str, argument: str, value: str) -> message.Message:
    checked = _checker(rule, argument)()
    setattr(checked, "value", value)  # noqa: B010 - a field of a class built at run time
    return checked


def _passes(rule: str, argument: str, value: str) -> bool:
    import protovalidate

    return not protovalidate.collect_violations(_message(rule, argument, value))


def format_ok(fmt: str, value: str) -> bool:
    """Whether ``value`` has format ``fmt`` (email, uuid or url), as protovalidate judges it."""
    rule = FORMAT_RULES.get(fmt)
    if rule is None:
        raise ValueError(f"unknown string format {fmt!r}; expected email, uuid or url")
    return _passes(rule, "", value)


def pattern_ok(pattern: str, value: str) -> bool:
    """Whether the RE2 ``pattern`` matches somewhere in ``value`` (protovalidate's ``pattern``)."""
    return _passes("pattern", pattern, value)


def pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` is no RE2 expression protovalidate can run, or None when it is one."""
    import protovalidate

    try:
        protovalidate.collect_violations(_message("pattern", pattern, ""))
    except protovalidate.CompilationError as exc:
        return str(exc)
    return None
