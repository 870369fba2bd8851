"""One module version on the wire: a private descriptor pool, its message classes, and a codec.

Every version of a module declares the same protobuf symbols (``users.v1.CreateUserRequest``)
with different shapes, so each version gets its own :class:`DescriptorPool` rather than the
process-wide default one. Messages convert to and from plain JSON-like dicts (the form that
``validate``, transformers and pydantic all take), guided by the GType schema so that enums,
unions, timestamps and presence come out as the schema says rather than as protobuf's JSON
mapping would (which turns int64 into strings, for one).
"""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory, timestamp_pb2

from runtime.errors import InvalidArgument
from runtime.gtype import (
    VALIDATE_PROTO,
    Field,
    GType,
    Schema,
    add_buf_validate,
    is_date,
    is_datetime,
    same_scalar,
    validate,
)
from runtime.wire._descriptor import enum_value_name, is_string_enum, variant_suffix
from runtime.wire._naming import request_message, response_message

__all__ = ["WireVersion", "serving_pool"]

_UTC = _dt.UTC


class WireVersion:
    """The descriptors and codec of one module version.

    >>> wire = WireVersion(schema, fdp)                                  # doctest: +SKIP
    >>> wire.decode("CreateUserRequest", payload)                        # doctest: +SKIP
    {'name': 'Grace Hopper', 'email': 'grace@example.com'}
    """

    def __init__(self, schema: Schema, fdp: descriptor_pb2.FileDescriptorProto) -> None:
        self.schema = schema
        self.file_proto = fdp
        self.pool = descriptor_pool.DescriptorPool()
        if VALIDATE_PROTO in fdp.dependency:
            add_buf_validate(self.pool)  # timestamp.proto comes with it
        elif "google/protobuf/timestamp.proto" in fdp.dependency:
            self.pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
        self.file = self.pool.AddSerializedFile(fdp.SerializeToString())
        self.package = fdp.package
        self._classes: dict[str, type[message.Message]] = {}
        self._fields: dict[str, tuple[Field, ...]] = {}
        self._enum_numbers: dict[str, dict[Any, int]] = {}
        self._enum_values: dict[str, dict[int, Any]] = {}
        for method in schema.methods:
            self._fields[request_message(method.name)] = schema.resolve(method.request).fields
            self._fields[response_message(method.name)] = schema.resolve(method.response).fields
        for t in schema.types:
            if t.kind == "object":
                self._fields.setdefault(t.name, t.fields)
            elif t.kind == "enum" and is_string_enum(t):
                numbers = {}
                pb_enum = self.pool.FindEnumTypeByName(f"{self.package}.{t.name}") if self._has_enum(t.name) else None
                if pb_enum is not None:
                    for value in t.values:
                        numbers[value] = pb_enum.values_by_name[enum_value_name(t.name, value)].number
                self._enum_numbers[t.name] = numbers
                self._enum_values[t.name] = {n: v for v, n in numbers.items()}

    def _has_enum(self, name: str) -> bool:
        return any(e.name == name for e in self.file_proto.enum_type)

    # -- classes --------------------------------------------------------------------------------
    def message_class(self, name: str) -> type[message.Message]:
        cls = self._classes.get(name)
        if cls is None:
            desc = self.pool.FindMessageTypeByName(f"{self.package}.{name}")
            cls = self._classes[name] = message_factory.GetMessageClass(desc)
        return cls

    def request_class(self, method: str) -> type[message.Message]:
        return self.message_class(request_message(method))

    def response_class(self, method: str) -> type[message.Message]:
        return self.message_class(response_message(method))

    # -- bytes <-> dict -------------------------------------------------------------------------
    def decode(self, name: str, data: bytes) -> dict[str, Any]:
        """Parse ``data`` as message ``name``; malformed bytes are ``InvalidArgument``."""
        cls = self.message_class(name)
        try:
            msg = cls.FromString(data)
        except message.DecodeError as exc:
            raise InvalidArgument(f"malformed protobuf for {self.package}.{name}: {exc}") from exc
        return self.to_dict(name, msg)

    def encode(self, name: str, value: Mapping[str, Any]) -> bytes:
        return self.from_dict(name, value).SerializeToString()

    # -- message <-> dict -----------------------------------------------------------------------
    def to_dict(self, name: str, msg: message.Message) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self._fields[name]:
            t = f.type
            if t.kind == "union":
                which = msg.WhichOneof(f.name)
                if which is not None:
                    variant = next(v for v in t.variants if f"{f.name}_{variant_suffix(v)}" == which)
                    out[f.name] = self._out(getattr(msg, which), variant)
                elif t.nullable and f.required:
                    out[f.name] = None
            elif t.kind == "array":
                assert t.items is not None
                items = t.items
                out[f.name] = [self._out(x, items) for x in getattr(msg, f.name)]
            elif t.kind == "map":
                assert t.items is not None
                values = t.items
                out[f.name] = {k: self._out(v, values) for k, v in getattr(msg, f.name).items()}
            elif msg.HasField(f.name):
                out[f.name] = self._out(getattr(msg, f.name), t)
            elif t.nullable and f.required:
                # The wire carries null as absence, so a required nullable field that is absent
                # was null; saying so keeps ``x: int | None`` valid when the caller sent None.
                out[f.name] = None
        return out

    def _out(self, value: Any, t: GType) -> Any:
        if t.kind == "ref":
            target = self.schema.type(t.name)
            if target.kind == "object":
                return self.to_dict(t.name, value)
            if t.name in self._enum_values:
                # 0 is _UNSPECIFIED, no member: null. A number this version does not know stays
                # a number, which validation then refuses as no member of the enum.
                return self._enum_values[t.name].get(value, value or None)
            return value
        if t.kind == "primitive" and t.name == "datetime":
            return value.ToDatetime(tzinfo=_UTC)
        return value

    def from_dict(self, name: str, value: Mapping[str, Any]) -> message.Message:
        """Build message ``name`` from a dict; a value of the wrong type raises ``TypeError``."""
        msg = self.message_class(name)()
        self._fill(name, msg, value)
        return msg

    def _fill(self, name: str, msg: message.Message, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"{self.package}.{name}: expected an object, got {type(value).__name__}")
        for f in self._fields[name]:
            v = value.get(f.name)
            if v is None:
                continue
            t = f.type
            try:
                if t.kind == "union":
                    variant = self._pick_variant(t, v)
                    self._set(msg, f"{f.name}_{variant_suffix(variant)}", variant, v)
                elif t.kind == "array":
                    assert t.items is not None
                    self._extend(getattr(msg, f.name), t.items, v)
                elif t.kind == "map":
                    assert t.items is not None
                    self._update(getattr(msg, f.name), t.items, v)
                else:
                    self._set(msg, f.name, t, v)
            except (TypeError, ValueError, KeyError) as exc:
                raise TypeError(f"{self.package}.{name}.{f.name}: {exc}") from exc

    def _scalar(self, t: GType, v: Any) -> Any:
        if isinstance(v, enum.Enum):
            v = v.value
        if t.kind == "ref" and t.name in self._enum_numbers:
            return self._enum_numbers[t.name][v]
        if t.kind == "primitive" and t.name == "date" and isinstance(v, _dt.date):
            return v.isoformat()
        if t.kind == "primitive" and t.name == "float" and isinstance(v, int):
            return float(v)
        return v

    def _is_message(self, t: GType) -> bool:
        return (t.kind == "ref" and self.schema.type(t.name).kind == "object") or (
            t.kind == "primitive" and t.name == "datetime"
        )

    def _set_message(self, target: message.Message, t: GType, v: Any) -> None:
        if t.kind == "primitive":  # datetime
            if isinstance(v, str):
                try:
                    target.FromJsonString(v)  # type: ignore[attr-defined]
                    return
                except ValueError:
                    # RFC 3339 only; validation takes any ISO 8601 form Python reads, such as
                    # "2025-01-15T10:00:00" (naive, so UTC like a naive datetime) or "2025-01-15".
                    v = _dt.datetime.fromisoformat(v)
            if not isinstance(v, _dt.datetime):
                raise TypeError(f"expected a datetime or an ISO-8601 string, got {type(v).__name__}")
            if v.tzinfo is None:
                v = v.replace(tzinfo=_UTC)
            target.FromDatetime(v)  # type: ignore[attr-defined]
            return
        target.SetInParent()
        self._fill(t.name, target, v)

    def _set(self, msg: message.Message, field: str, t: GType, v: Any) -> None:
        if self._is_message(t):
            self._set_message(getattr(msg, field), t, v)
        else:
            setattr(msg, field, self._scalar(t, v))

    def _extend(self, container: Any, t: GType, values: Any) -> None:
        if self._is_message(t):
            for v in values:
                self._set_message(container.add(), t, v)
        else:
            container.extend(self._scalar(t, v) for v in values)

    def _update(self, container: Any, t: GType, values: Mapping[Any, Any]) -> None:
        for k, v in values.items():
            if self._is_message(t):
                self._set_message(container[k], t, v)
            else:
                container[k] = self._scalar(t, v)

    def _pick_variant(self, t: GType, v: Any) -> GType:
        # Prefer the variant that takes the value exactly as it is: the first object that
        # merely receives a dict would drop the fields of the variant it really is, and 3 is
        # an int before it is a float. Only then fall back to the first variant that accepts it.
        for exact in (True, False):
            for variant in t.variants:
                if _accepts(self.schema, variant, v, exact=exact):
                    return variant
        raise TypeError(f"value {v!r} matches no variant of the union")


_PRIMITIVE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "date": lambda v: isinstance(v, str | _dt.date),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "bytes": lambda v: isinstance(v, bytes),
    "datetime": lambda v: isinstance(v, str | _dt.datetime),
}
_EXACT_CHECKS: dict[str, Callable[[Any], bool]] = {
    "float": lambda v: isinstance(v, float),
    "date": is_date,
    # "2025-01-15" also reads as a datetime (midnight), but as it is, it is a date.
    "datetime": lambda v: is_datetime(v) and not is_date(v),
}


def _accepts(schema: Schema, t: GType, v: Any, *, exact: bool = False) -> bool:
    """Whether union variant ``t`` can carry ``v``; used only to pick a variant when encoding.

    Loosely, any dict fits an object, an int fits a float and any string a date. ``exact`` asks
    for more: the dict validates as that object, a float is a float, a date or datetime string
    parses as one, and a literal or enum value is the same scalar (``True`` is not ``1``).
    """
    if t.kind == "primitive":
        if exact and t.name in _EXACT_CHECKS:
            return _EXACT_CHECKS[t.name](v)
        return _PRIMITIVE_CHECKS[t.name](v)
    if t.kind == "literal":
        return same_scalar(v, t.values) if exact else v in t.values
    if t.kind == "ref":
        target = schema.type(t.name)
        if target.kind == "object":
            if exact:
                return isinstance(v, Mapping) and not validate(dict(v), t, schema)
            return isinstance(v, Mapping)
        if exact:
            return same_scalar(v, target.values)
        return (v.value if isinstance(v, enum.Enum) else v) in target.values
    return False


def serving_pool(files: Sequence[descriptor_pb2.FileDescriptorProto]) -> descriptor_pool.DescriptorPool:
    """A pool for server reflection: ``files`` plus the descriptors every server needs.

    grpcurl asks reflection for every service a server lists, health and reflection included,
    so those must resolve in the same pool as the module's services; and it decodes the
    ``google.rpc`` error details (BadRequest, RetryInfo) of a failed call through reflection too.
    """
    from google.protobuf import duration_pb2
    from google.rpc import error_details_pb2
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    pool = descriptor_pool.DescriptorPool()
    seen: set[str] = set()
    common = (
        timestamp_pb2.DESCRIPTOR, duration_pb2.DESCRIPTOR, error_details_pb2.DESCRIPTOR,
        health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR,
    )  # fmt: skip
    for fd in common:
        pool.AddSerializedFile(fd.serialized_pb)
        seen.add(fd.name)
    if any(VALIDATE_PROTO in fdp.dependency for fdp in files):
        # grpcurl resolves every import through reflection, buf.validate's rules included.
        add_buf_validate(pool)
        seen.add(VALIDATE_PROTO)
    for fdp in files:
        if fdp.name not in seen:
            pool.AddSerializedFile(fdp.SerializeToString())
            seen.add(fdp.name)
    return pool
