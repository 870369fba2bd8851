"""The GType schema model: one immutable tree per type, canonical JSON, and a fingerprint.

A GType node has a ``kind``:

==========  ===============================================================================
primitive   ``name`` is one of :data:`PRIMITIVES` (str, int, float, bool, bytes, datetime, date)
literal     ``values`` holds the allowed constants (all str, or all int, or all bool)
object      ``name`` is the type's name, ``fields`` its fields in declaration order
array       ``items`` is the element type
map         ``keys`` (str or int primitive) and ``items`` (the value type)
enum        ``name`` and ``values``: the members' wire values (str or int), in order
union       ``variants``: the alternatives (a oneof)
ref         ``name`` names an object or enum in the enclosing :class:`Schema`'s ``types``
==========  ===============================================================================

Any node can be ``nullable`` (may hold ``None``) and carry :class:`Constraints`. Whether a field
may be omitted is a property of the :class:`Field` (``required``), because it is the field, not
the type, that may be absent.

Canonical JSON (:func:`canonical_json`) sorts keys, omits defaults and uses no whitespace, so
two equal schemas serialise to the same bytes, and :func:`fingerprint` is the SHA-256 of it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeAlias

__all__ = [
    "PRIMITIVES",
    "Constraints",
    "Field",
    "GType",
    "Kind",
    "Method",
    "Schema",
    "canonical_json",
    "fingerprint",
]

Kind: TypeAlias = Literal["primitive", "literal", "object", "array", "map", "enum", "union", "ref"]
KINDS: frozenset[str] = frozenset(
    ("primitive", "literal", "object", "array", "map", "enum", "union", "ref")
)
PRIMITIVES: frozenset[str] = frozenset(("str", "int", "float", "bool", "bytes", "datetime", "date"))
Scalar: TypeAlias = str | int | float | bool
Format: TypeAlias = Literal["email", "uuid", "url"]


@dataclass(frozen=True, slots=True)
class Constraints:
    """Validators attached to a node. ``None`` (or empty) means "not constrained"."""

    ge: float | None = None
    """Inclusive minimum for numbers."""
    le: float | None = None
    """Inclusive maximum for numbers."""
    gt: float | None = None
    """Exclusive minimum for numbers."""
    lt: float | None = None
    """Exclusive maximum for numbers."""
    min_length: int | None = None
    """Minimum length of a string, bytes, array or map."""
    max_length: int | None = None
    """Maximum length of a string, bytes, array or map."""
    pattern: str | None = None
    """A regular expression (Python ``re`` syntax, searched) that a string must match."""
    format: Format | None = None
    """A well-known string format: email, uuid or url."""
    enum: tuple[Scalar, ...] = ()
    """The only allowed values, when not empty."""
    custom: tuple[str, ...] = ()
    """Names of custom validators (``module:function``), run by ``validate`` if registered."""

    def is_empty(self) -> bool:
        return self == _NO_CONSTRAINTS

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == ():
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Constraints:
        kwargs: dict[str, Any] = dict(data)
        for key in ("enum", "custom"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


_NO_CONSTRAINTS = Constraints()


@dataclass(frozen=True, slots=True)
class Field:
    """A named member of an object type."""

    name: str
    type: GType
    required: bool = True
    """False when the field may be omitted (it has a default)."""
    default: Any = None
    """The default as JSON, meaningful only when ``required`` is False."""
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type.to_json()}
        if not self.required:
            out["required"] = False
            if self.default is not None:
                out["default"] = self.default
        if self.description:
            out["description"] = self.description
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Field:
        return cls(
            name=data["name"],
            type=GType.from_json(data["type"]),
            required=data.get("required", True),
            default=data.get("default"),
            description=data.get("description", ""),
        )


@dataclass(frozen=True, slots=True)
class GType:
    """One schema node. Build nodes with the class methods, not the constructor."""

    kind: Kind
    name: str = ""
    fields: tuple[Field, ...] = ()
    items: GType | None = None
    keys: GType | None = None
    values: tuple[Scalar, ...] = ()
    variants: tuple[GType, ...] = ()
    nullable: bool = False
    constraints: Constraints = field(default_factory=Constraints)
    description: str = ""

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def primitive(cls, name: str, **kw: Any) -> GType:
        if name not in PRIMITIVES:
            raise ValueError(f"unknown primitive {name!r}; expected one of {sorted(PRIMITIVES)}")
        return cls(kind="primitive", name=name, **kw)

    @classmethod
    def literal(cls, *values: Scalar, **kw: Any) -> GType:
        return cls(kind="literal", values=tuple(values), **kw)

    @classmethod
    def object(cls, name: str, fields: tuple[Field, ...] | list[Field], **kw: Any) -> GType:
        return cls(kind="object", name=name, fields=tuple(fields), **kw)

    @classmethod
    def array(cls, items: GType, **kw: Any) -> GType:
        return cls(kind="array", items=items, **kw)

    @classmethod
    def map(cls, keys: GType, items: GType, **kw: Any) -> GType:
        return cls(kind="map", keys=keys, items=items, **kw)

    @classmethod
    def enum(cls, name: str, values: tuple[Scalar, ...] | list[Scalar], **kw: Any) -> GType:
        return cls(kind="enum", name=name, values=tuple(values), **kw)

    @classmethod
    def union(cls, *variants: GType, **kw: Any) -> GType:
        return cls(kind="union", variants=tuple(variants), **kw)

    @classmethod
    def ref(cls, name: str, **kw: Any) -> GType:
        return cls(kind="ref", name=name, **kw)

    # -- helpers --------------------------------------------------------------------------------
    def with_nullable(self, nullable: bool = True) -> GType:
        return replace(self, nullable=nullable)

    def field(self, name: str) -> Field | None:
        """The field called ``name`` of an object type, or None."""
        for f in self.fields:
            if f.name == name:
                return f
        return None

    # -- canonical JSON -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.name:
            out["name"] = self.name
        if self.fields:
            out["fields"] = [f.to_json() for f in self.fields]
        if self.items is not None:
            out["items"] = self.items.to_json()
        if self.keys is not None:
            out["keys"] = self.keys.to_json()
        if self.values:
            out["values"] = list(self.values)
        if self.variants:
            out["variants"] = [v.to_json() for v in self.variants]
        if self.nullable:
            out["nullable"] = True
        if not self.constraints.is_empty():
            out["constraints"] = self.constraints.to_json()
        if self.description:
            out["description"] = self.description
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GType:
        kind = data["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown GType kind {kind!r}")
        return cls(
            kind=kind,
            name=data.get("name", ""),
            fields=tuple(Field.from_json(f) for f in data.get("fields", ())),
            items=GType.from_json(data["items"]) if "items" in data else None,
            keys=GType.from_json(data["keys"]) if "keys" in data else None,
            values=tuple(data.get("values", ())),
            variants=tuple(GType.from_json(v) for v in data.get("variants", ())),
            nullable=data.get("nullable", False),
            constraints=Constraints.from_json(data.get("constraints", {})),
            description=data.get("description", ""),
        )


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC of a module: its request and response types (refs into ``Schema.types``)."""

    name: str
    """The gRPC method name, PascalCase (``CreateUser``)."""
    request: GType
    response: GType
    client_streaming: bool = False
    """The caller sends a stream of ``request`` messages (the handler takes an async iterator)."""
    server_streaming: bool = False
    """The method answers with a stream of ``response`` messages (the handler yields them)."""

    @property
    def streaming(self) -> str:
        """The call's shape: ``unary``, ``client``, ``server`` or ``bidi`` (streaming)."""
        return _SHAPES[self.client_streaming, self.server_streaming]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "request": self.request.to_json(),
            "response": self.response.to_json(),
        }
        # Omitted when false, as every default is, so a unary method's canonical JSON (and every
        # fingerprint recorded before streams existed) is unchanged.
        if self.client_streaming:
            out["client_streaming"] = True
        if self.server_streaming:
            out["server_streaming"] = True
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Method:
        return cls(
            name=data["name"],
            request=GType.from_json(data["request"]),
            response=GType.from_json(data["response"]),
            client_streaming=data.get("client_streaming", False),
            server_streaming=data.get("server_streaming", False),
        )


_SHAPES = {(False, False): "unary", (True, False): "client", (False, True): "server", (True, True): "bidi"}


@dataclass(frozen=True, slots=True)
class Schema:
    """A module's whole contract at one version: named types plus methods, both sorted by name."""

    module: str
    types: tuple[GType, ...] = ()
    """Named object and enum types, sorted by name; refs resolve against these."""
    methods: tuple[Method, ...] = ()
    """Methods, sorted by name."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", tuple(sorted(self.types, key=lambda t: t.name)))
        object.__setattr__(self, "methods", tuple(sorted(self.methods, key=lambda m: m.name)))

    def type(self, name: str) -> GType:
        """The named type ``name``; KeyError names it when missing."""
        for t in self.types:
            if t.name == name:
                return t
        raise KeyError(f"schema {self.module!r} has no type {name!r}")

    def method(self, name: str) -> Method:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(f"schema {self.module!r} has no method {name!r}")

    def resolve(self, t: GType) -> GType:
        """Follow a ref to its named type (keeping the ref's nullability); other nodes as is."""
        if t.kind != "ref":
            return t
        target = self.type(t.name)
        return target.with_nullable(True) if t.nullable else target

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "types": [t.to_json() for t in self.types],
            "methods": [m.to_json() for m in self.methods],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schema:
        return cls(
            module=data["module"],
            types=tuple(GType.from_json(t) for t in data.get("types", ())),
            methods=tuple(Method.from_json(m) for m in data.get("methods", ())),
        )

    def fingerprint(self) -> str:
        return fingerprint(self)


def canonical_json(node: GType | Schema | Method | dict[str, Any]) -> str:
    """The canonical serialisation: sorted keys, no whitespace, UTF-8 kept as is."""
    data = node if isinstance(node, dict) else node.to_json()
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(node: GType | Schema | Method | dict[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON; equal schemas have equal fingerprints."""
    digest = hashlib.sha256(canonical_json(node).encode("utf-8")).hexdigest()
    return f"sha256:{digest}"
