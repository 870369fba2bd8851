"""GType schema → protobuf ``FileDescriptorProto``, deterministically.

The same function feeds the runtime (workers, gateway and reflection build their message
classes from it) and codegen (the ``.proto`` text is rendered from it), so what is served and
what is committed cannot drift apart.

Mapping:

=====================  ======================================================================
GType                  protobuf
=====================  ======================================================================
str / date             ``optional string`` (date as ISO-8601 ``YYYY-MM-DD``)
int / float / bool     ``optional int64`` / ``optional double`` / ``optional bool``
bytes                  ``optional bytes``
datetime               ``google.protobuf.Timestamp``
literal                the scalar type of its values
enum (str values)      a protobuf enum ``NAME_VALUE``, with ``NAME_UNSPECIFIED = 0``
enum (int values)      ``optional int64`` (the values are checked by validation)
object (ref)           a message named after the type
array of T             ``repeated T``
map of K to V          ``map<string|int64, V>``
union                  a ``oneof`` named after the field, one member per variant
=====================  ======================================================================

Every singular scalar has explicit presence (``optional``), so a missing required field is
reported as missing by validation rather than silently read as ``""`` or ``0``. Requiredness and
constraints are published as ``buf.validate`` field rules (see ``_rules``), so any protovalidate
implementation enforces what the runtime enforces. Each method gets
its own ``<Method>Request`` and ``<Method>Response`` message holding the fields of its request
and response type, as buf's RPC_REQUEST_STANDARD_NAME asks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2

from runtime.gtype import VALIDATE_PROTO, Field, GType, Schema, options_with_rules
from runtime.wire._lock import FieldLock
from runtime.wire._naming import (
    file_name,
    package_name,
    pascal,
    request_message,
    response_message,
    snake,
)
from runtime.wire._rules import field_rules, oneof_required

__all__ = ["WireSchemaError", "build_file", "message_fields"]

FDP = descriptor_pb2.FieldDescriptorProto
TIMESTAMP = "google/protobuf/timestamp.proto"

_SCALARS: dict[str, int] = {
    "str": FDP.TYPE_STRING,
    "date": FDP.TYPE_STRING,
    "int": FDP.TYPE_INT64,
    "float": FDP.TYPE_DOUBLE,
    "bool": FDP.TYPE_BOOL,
    "bytes": FDP.TYPE_BYTES,
}


class WireSchemaError(ValueError):
    """A schema that has no faithful protobuf form; the message says what to change."""


@dataclass(frozen=True, slots=True)
class _Scalar:
    type: int


def _literal_scalar(t: GType) -> int:
    kinds = {type(v) for v in t.values}
    if kinds == {str}:
        return FDP.TYPE_STRING
    if kinds == {bool}:
        return FDP.TYPE_BOOL
    if kinds == {int}:
        return FDP.TYPE_INT64
    raise WireSchemaError(f"a Literal must hold values of one type, got {sorted(map(repr, t.values))}")


def enum_value_name(enum: str, value: object) -> str:
    """``OrderStatus`` + ``"pending"`` → ``ORDER_STATUS_PENDING``."""
    body = re.sub(r"[^0-9A-Za-z]+", "_", str(value)).strip("_").upper() or "EMPTY"
    return f"{snake(enum).upper()}_{body}"


class _Builder:
    def __init__(
        self,
        schema: Schema,
        lock: FieldLock,
        seen: dict[str, dict[str, int]],
        seen_enums: dict[str, dict[str, int]],
    ) -> None:
        self.schema = schema
        self.lock = lock
        self.seen = seen
        self.seen_enums = seen_enums
        self.package = package_name(schema.module)
        self.file = descriptor_pb2.FileDescriptorProto(
            name=file_name(schema.module), package=self.package, syntax="proto3"
        )
        self.pending: list[str] = []
        self.emitted: set[str] = set()

    def qualified(self, name: str) -> str:
        return f".{self.package}.{name}"

    def build(self) -> descriptor_pb2.FileDescriptorProto:
        reserved = set()
        for method in self.schema.methods:
            reserved |= {request_message(method.name), response_message(method.name)}
        clash = reserved & {t.name for t in self.schema.types}
        if clash:
            raise WireSchemaError(
                f"type names {sorted(clash)} collide with generated request/response message names"
            )
        messages: list[descriptor_pb2.DescriptorProto] = []
        for method in self.schema.methods:
            for msg_name, t in (
                (request_message(method.name), method.request),
                (response_message(method.name), method.response),
            ):
                target = self.schema.resolve(t)
                if target.kind != "object":
                    raise WireSchemaError(
                        f"method {method.name}: request and response must be objects, got {target.kind}"
                    )
                messages.append(self.message(msg_name, target.fields))
        while self.pending:
            name = self.pending.pop(0)
            t = self.schema.type(name)
            if t.kind == "object":
                messages.append(self.message(name, t.fields))
            else:
                self.file.enum_type.append(self.enum(t))
        self.file.message_type.extend(sorted(messages, key=lambda m: m.name))
        enums = sorted(self.file.enum_type, key=lambda e: e.name)
        del self.file.enum_type[:]
        self.file.enum_type.extend(enums)
        service = self.file.service.add(name=f"{pascal(self.schema.module)}Service")
        for method in self.schema.methods:
            added = service.method.add(
                name=method.name,
                input_type=self.qualified(request_message(method.name)),
                output_type=self.qualified(response_message(method.name)),
            )
            # Set only when true: a unary method's descriptor stays byte for byte what it was.
            if method.client_streaming:
                added.client_streaming = True
            if method.server_streaming:
                added.server_streaming = True
        deps = sorted(set(self.file.dependency))
        del self.file.dependency[:]
        self.file.dependency.extend(deps)
        return self.file

    def use(self, name: str) -> str:
        if name not in self.emitted:
            self.emitted.add(name)
            self.pending.append(name)
        return self.qualified(name)

    def enum(self, t: GType) -> descriptor_pb2.EnumDescriptorProto:
        e = descriptor_pb2.EnumDescriptorProto(name=t.name)
        unspecified = f"{snake(t.name).upper()}_UNSPECIFIED"
        e.value.add(name=unspecified, number=0)
        # A value spelt "unspecified" would declare the zero value's name a second time.
        names: set[str] = {unspecified}
        for value in t.values:
            vname = enum_value_name(t.name, value)
            if vname in names:
                raise WireSchemaError(f"enum {t.name}: values collide as {vname}")
            names.add(vname)
            e.value.add(name=vname, number=self.lock.enum_number(t.name, vname))
        # Values this enum had in earlier versions but not now stay reserved for good, so no
        # later value can take a number (or a name) an old client still reads as the old one.
        present = {v.number for v in e.value}
        gone = {n: num for n, num in self.seen_enums.get(t.name, {}).items() if n not in names}
        for vname, number in sorted(gone.items(), key=lambda kv: kv[1]):
            if number not in present:
                e.reserved_range.add(start=number, end=number)  # enum ranges are inclusive
                e.reserved_name.append(vname)
        return e

    def message(self, name: str, fields: Iterable[Field]) -> descriptor_pb2.DescriptorProto:
        msg = descriptor_pb2.DescriptorProto(name=name)
        synthetic: list[descriptor_pb2.FieldDescriptorProto] = []
        present: dict[str, int] = {}
        for f in fields:
            self.field(msg, name, f, synthetic, present)
        # proto3 `optional` uses synthetic oneofs, which must follow every real oneof.
        for fd in synthetic:
            fd.oneof_index = len(msg.oneof_decl)
            msg.oneof_decl.add(name=f"_{fd.name}")
        # Numbers this message had in earlier versions but not now stay reserved for good.
        gone = {n: num for n, num in self.seen.get(name, {}).items() if n not in present}
        for fname, number in sorted(gone.items(), key=lambda kv: kv[1]):
            if number not in present.values():
                msg.reserved_range.add(start=number, end=number + 1)
                msg.reserved_name.append(fname)
        return msg

    def field(
        self,
        msg: descriptor_pb2.DescriptorProto,
        owner: str,
        f: Field,
        synthetic: list[descriptor_pb2.FieldDescriptorProto],
        present: dict[str, int],
    ) -> None:
        t = f.type
        if t.kind == "union":
            self.union(msg, owner, f, present)
            return
        if t.kind in ("array", "map") and t.items is not None and t.items.nullable:
            raise WireSchemaError(
                f"{owner}.{f.name}: list items and map values cannot be null on the wire "
                "(repeated fields have no per-item presence)"
            )
        fd = msg.field.add(name=f.name, json_name=f.name)
        fd.number = present[f.name] = self.lock.field_number(owner, f.name)
        if t.kind == "array":
            assert t.items is not None
            fd.label = FDP.LABEL_REPEATED
            self.singular(fd, t.items, where=f"{owner}.{f.name}[]")
        elif t.kind == "map":
            assert t.keys is not None and t.items is not None
            fd.label = FDP.LABEL_REPEATED
            entry = msg.nested_type.add(name=f"{pascal(f.name)}Entry")
            entry.options.map_entry = True
            key = entry.field.add(name="key", json_name="key", number=1, label=FDP.LABEL_OPTIONAL)
            key_type = self.scalar_of(t.keys)
            if key_type not in (FDP.TYPE_STRING, FDP.TYPE_INT64):
                raise WireSchemaError(f"{owner}.{f.name}: map keys must be str or int")
            key.type = key_type  # type: ignore[assignment]
            value = entry.field.add(name="value", json_name="value", number=2, label=FDP.LABEL_OPTIONAL)
            self.singular(value, t.items, where=f"{owner}.{f.name}{{}}")
            fd.type = FDP.TYPE_MESSAGE
            fd.type_name = f"{self.qualified(owner)}.{entry.name}"
        else:
            fd.label = FDP.LABEL_OPTIONAL
            self.singular(fd, t, where=f"{owner}.{f.name}")
            if fd.type != FDP.TYPE_MESSAGE:
                fd.proto3_optional = True
                synthetic.append(fd)
        self.rules(fd.options, field_rules(self.schema, t, required=f.required))

    def rules(self, options: descriptor_pb2.FieldOptions | descriptor_pb2.OneofOptions, fill: Any, *, oneof: bool = False) -> None:
        """Attach ``buf.validate`` rules (when there are any) and import their definitions."""
        if fill is None:
            return
        options.ParseFromString(options_with_rules(fill, oneof=oneof))
        if VALIDATE_PROTO not in self.file.dependency:
            self.file.dependency.append(VALIDATE_PROTO)

    def union(
        self, msg: descriptor_pb2.DescriptorProto, owner: str, f: Field, present: dict[str, int]
    ) -> None:
        index = len(msg.oneof_decl)
        oneof = msg.oneof_decl.add(name=f.name)
        if oneof_required(f.type, required=f.required):
            self.rules(oneof.options, lambda rules: setattr(rules, "required", True), oneof=True)
        for variant in f.type.variants:
            member = f"{f.name}_{variant_suffix(variant)}"
            fd = msg.field.add(name=member, json_name=member, label=FDP.LABEL_OPTIONAL)
            fd.number = present[member] = self.lock.field_number(owner, member)
            fd.oneof_index = index
            self.singular(fd, variant, where=f"{owner}.{f.name}")
            self.rules(fd.options, field_rules(self.schema, variant, required=False))

    def scalar_of(self, t: GType) -> int:
        if t.kind == "primitive" and t.name in _SCALARS:
            return _SCALARS[t.name]
        if t.kind == "literal":
            return _literal_scalar(t)
        return -1

    def singular(self, fd: descriptor_pb2.FieldDescriptorProto, t: GType, *, where: str) -> None:
        if t.kind == "ref":
            target = self.schema.type(t.name)
            if target.kind == "enum" and not is_string_enum(target):
                fd.type = FDP.TYPE_INT64
                return
            fd.type = FDP.TYPE_MESSAGE if target.kind == "object" else FDP.TYPE_ENUM
            fd.type_name = self.use(t.name)
            return
        if t.kind == "primitive" and t.name == "datetime":
            fd.type = FDP.TYPE_MESSAGE
            fd.type_name = ".google.protobuf.Timestamp"
            if TIMESTAMP not in self.file.dependency:
                self.file.dependency.append(TIMESTAMP)
            return
        scalar = self.scalar_of(t)
        if scalar < 0:
            raise WireSchemaError(
                f"{where}: a {t.kind} cannot appear here on the wire "
                "(nested lists, maps and unions need a named model around them)"
            )
        fd.type = scalar  # type: ignore[assignment]


def is_string_enum(t: GType) -> bool:
    return all(isinstance(v, str) for v in t.values)


def variant_suffix(t: GType) -> str:
    """The oneof member suffix for a union variant: ``str``, ``int``, ``user``..."""
    if t.kind == "ref":
        return snake(t.name)
    if t.kind == "primitive":
        return t.name
    if t.kind == "literal":
        return "literal"
    raise WireSchemaError(f"union variants must be primitives or named types, got {t.kind}")


def message_fields(fdp: descriptor_pb2.FileDescriptorProto) -> dict[str, dict[str, int]]:
    """Message name → field name → number, for reserving what later versions drop."""
    return {m.name: {f.name: f.number for f in m.field} for m in fdp.message_type}


def build_file(
    schema: Schema,
    lock: FieldLock,
    *,
    previous: Iterable[descriptor_pb2.FileDescriptorProto] = (),
) -> descriptor_pb2.FileDescriptorProto:
    """The ``FileDescriptorProto`` of one module version.

    ``lock`` gives (and, for new fields, assigns) field numbers. ``previous`` are the files of
    the module's earlier versions, oldest first: any field or enum value they had that this
    version lacks is reserved here, by number and by name.
    """
    seen: dict[str, dict[str, int]] = {}
    seen_enums: dict[str, dict[str, int]] = {}
    for earlier in previous:
        for m in earlier.message_type:
            numbers = seen.setdefault(m.name, {})
            numbers.update({f.name: f.number for f in m.field})
            locked = lock.messages.get(m.name, {})
            numbers.update({r: locked[r] for r in m.reserved_name if r in locked})
        for e in earlier.enum_type:
            values = seen_enums.setdefault(e.name, {})
            values.update({v.name: v.number for v in e.value if v.number != 0})
            locked = lock.enums.get(e.name, {})
            values.update({r: locked[r] for r in e.reserved_name if r in locked})
    return _Builder(schema, lock, seen, seen_enums).build()
