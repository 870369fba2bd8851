"""The analyzer: Python annotations in, GTypes out.

A handler's request and response annotations are walked once. Every named type met on the way (a
pydantic model, dataclass, TypedDict or Enum) becomes one entry of a ``types`` table and is
replaced by a ``ref`` to it, so recursive and shared types are described once.

What maps to what:

=====================================  ==========================================================
annotation                             GType
=====================================  ==========================================================
``str int float bool bytes``           primitive of that name
``datetime.datetime`` / ``date``       primitive ``datetime`` / ``date``
``uuid.UUID``                          primitive ``str`` with format ``uuid``
``EmailStr`` / ``AnyUrl``, ``HttpUrl``  primitive ``str`` with format ``email`` / ``url``
``Literal[...]``                       literal (all str, all int or all bool)
``X | None``, ``Optional[X]``          X, nullable (not as a list item or map value: a
                                       repeated field has no per-item presence on the wire)
``A | B``                              union (nullable when it contains None)
``list[X]``, ``Sequence[X]``           array
``dict[K, V]``, ``Mapping[K, V]``      map; K is ``str`` or ``int``
``Annotated[X, ...]``                  X with constraints (annotated_types, ``Field``,
                                       ``StringConstraints``, ``AfterValidator``)
model, dataclass, TypedDict, Enum      a named object or enum, and a ``ref`` to it
=====================================  ==========================================================

A handler's request annotated ``AsyncIterator[M]`` (or ``AsyncIterable[M]``) makes the method client
streaming; a return annotated ``AsyncIterator[M]`` (``AsyncIterable``, ``AsyncGenerator[M, None]``)
makes it server streaming; both make it bidirectional. ``M`` is the message type either way.

Everything else (``Any``, ``object``, sets, tuples, callables, arbitrary classes, a bare
``list``...) raises :class:`UnsupportedType` naming the handler, the field path and the type.

Validators that only check a value (``AfterValidator``, ``field_validator(mode="after")``) are
recorded as custom constraints named ``module:qualname`` and registered, so ``validate`` runs them
in the same process. Validators that change what the wire may carry (before, wrap and plain
validators, serializers) are refused, because the GType would then describe the wrong input.
Model validators are not represented: they see the whole model, and pydantic runs them when the
request is decoded.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import types as pytypes
import typing
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
    MutableSequence,
    Sequence,
)
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, ForwardRef, Literal, NewType, Union, get_args, get_origin

import typing_extensions
from pydantic import AnyHttpUrl, AnyUrl, BaseModel, EmailStr, HttpUrl
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from runtime.gtype._errors import UnsupportedType
from runtime.gtype._metadata import constrain, register_pydantic_validator
from runtime.gtype._model import Constraints, Field, GType, Method, Schema

__all__ = [
    "HandlerTypes",
    "analyze_handler",
    "analyze_type",
    "build_schema",
    "method_name",
    "stream_item",
]

FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
"""Field names become protobuf field names, so they are lower_snake_case."""
TYPE_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")
"""Named types become protobuf messages and enums, so they are PascalCase."""

_PRIMITIVE_TYPES: dict[object, str] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    bytes: "bytes",
    datetime: "datetime",
    date: "date",
}
_URL_TYPES: tuple[type, ...] = (AnyUrl, AnyHttpUrl, HttpUrl)
_SEQUENCE_ORIGINS: tuple[object, ...] = (list, Sequence, MutableSequence)
_MAPPING_ORIGINS: tuple[object, ...] = (dict, Mapping)
_REQUIRED_WRAPPERS: tuple[object, ...] = (
    typing.Required,
    typing.NotRequired,
    typing_extensions.Required,
    typing_extensions.NotRequired,
)


@dataclass(frozen=True, slots=True)
class HandlerTypes:
    """The analyzed request and response of one handler, with every named type they reach."""

    handler: str
    """Handler id ``module.Method``, e.g. ``users.CreateUser``."""
    method: str
    """gRPC method name, PascalCase (``CreateUser``)."""
    request: GType
    """``GType.ref`` to the request's named type."""
    response: GType
    """``GType.ref`` to the response's named type."""
    types: tuple[GType, ...]
    """Every named object and enum reachable from request and response, sorted by name."""
    client_streaming: bool = False
    """The request is annotated as an async iterator of messages."""
    server_streaming: bool = False
    """The response is annotated as an async iterator of messages."""


_STREAM_ORIGINS: tuple[object, ...] = (AsyncIterator, AsyncIterable, AsyncGenerator)


def stream_item(annotation: object) -> tuple[object, bool]:
    """``(M, True)`` for ``AsyncIterator[M]`` and its kin (a stream of M), else ``(annotation, False)``.

    >>> stream_item(AsyncIterator[int]), stream_item(int)
    ((<class 'int'>, True), (<class 'int'>, False))
    """
    if get_origin(annotation) in _STREAM_ORIGINS:
        args = get_args(annotation)
        if args and (get_origin(annotation) is not AsyncGenerator or args[1:] in ((), (None,), (type(None),))):
            return args[0], True
    return annotation, False


def method_name(function_name: str) -> str:
    """The PascalCase gRPC method name of a handler function.

    >>> method_name("create_user"), method_name("get_user_by_id")
    ('CreateUser', 'GetUserById')
    """
    return "".join(part[:1].upper() + part[1:] for part in function_name.split("_") if part)


def analyze_handler(
    fn: Callable[..., Any], *, module: str, method: str | None = None
) -> HandlerTypes:
    """Analyze a handler's request (first positional parameter) and response (return) types.

    ``method`` overrides the method name derived from the function name.

    >>> analyze_handler(create_user, module="users").handler  # doctest: +SKIP
    'users.CreateUser'
    """
    name = method or method_name(fn.__name__)
    handler = f"{module}.{name}"
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # NameError, TypeError... from evaluating string annotations
        raise UnsupportedType(
            handler, "request", fn, f"its annotations cannot be resolved: {exc}"
        ) from exc
    positional = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not positional or positional[0].name not in hints:
        raise UnsupportedType(
            handler, "request", "missing annotation", "the request parameter has no annotation"
        )
    if "return" not in hints:
        raise UnsupportedType(
            handler, "response", "missing annotation", "the return type is not annotated"
        )
    types: dict[str, GType] = {}
    ends: list[GType] = []
    streams: list[bool] = []
    for label, annotation in (
        ("request", hints[positional[0].name]),
        ("response", hints["return"]),
    ):
        message, streamed = stream_item(annotation)
        node = analyze_type(message, handler=handler, field=label, types=types)
        if node.kind != "ref" or node.nullable or types[node.name].kind != "object":
            raise UnsupportedType(
                handler,
                label,
                annotation,
                f"the {label} must be a pydantic model, dataclass or TypedDict "
                "(or an AsyncIterator of one, for a stream)",
            )
        ends.append(node)
        streams.append(streamed)
    return HandlerTypes(
        handler=handler,
        method=name,
        request=ends[0],
        response=ends[1],
        types=tuple(sorted(types.values(), key=lambda t: t.name)),
        client_streaming=streams[0],
        server_streaming=streams[1],
    )


def analyze_type(annotation: object, *, handler: str, field: str, types: dict[str, GType]) -> GType:
    """Map one annotation to a GType; named types go into ``types`` and come back as refs.

    ``handler`` and ``field`` only name the place in errors.

    >>> types = {}
    >>> analyze_type(list[int], handler="users.List", field="ids", types=types).kind
    'array'
    """
    return _Analyzer(handler, types).type_of(annotation, field)


def build_schema(module: str, handlers: Iterable[HandlerTypes]) -> Schema:
    """One module's Schema: the union of its handlers' named types and one Method per handler.

    The same name must mean the same type everywhere; otherwise UnsupportedType names the
    handler where the second meaning appeared.
    """
    types: dict[str, GType] = {}
    methods: dict[str, Method] = {}
    for h in handlers:
        if h.method in methods:
            raise ValueError(f"module {module!r} has two handlers for method {h.method!r}")
        for t in h.types:
            seen = types.setdefault(t.name, t)
            if seen != t:
                raise UnsupportedType(
                    h.handler, t.name, t.name, f"two different types are named {t.name}"
                )
        methods[h.method] = Method(
            name=h.method,
            request=h.request,
            response=h.response,
            client_streaming=h.client_streaming,
            server_streaming=h.server_streaming,
        )
    return Schema(module=module, types=tuple(types.values()), methods=tuple(methods.values()))


class _Analyzer:
    """One walk over an annotation. Keeps the classes being built, to stop at recursion."""

    def __init__(self, handler: str, types: dict[str, GType]) -> None:
        self.handler = handler
        self.types = types
        self.building: dict[str, object] = {}
        self.built: dict[str, object] = {}

    def fail(self, path: str, annotation: object, reason: str) -> UnsupportedType:
        return UnsupportedType(self.handler, path, annotation, reason)

    # -- dispatch ---------------------------------------------------------------------------
    def type_of(self, ann: object, path: str) -> GType:
        origin = get_origin(ann)
        if origin is Annotated:
            base, *meta = get_args(ann)
            return constrain(self.type_of(base, path), meta, path, self.fail)
        if origin in _REQUIRED_WRAPPERS:
            return self.type_of(get_args(ann)[0], path)
        if origin is Union or origin is pytypes.UnionType:
            return self.union_of(ann, path)
        if origin is Literal:
            return self.literal_of(ann, path)
        if origin in _SEQUENCE_ORIGINS:
            (item,) = get_args(ann)
            return GType.array(self.not_null(self.type_of(item, f"{path}[]"), f"{path}[]", ann))
        if origin in _MAPPING_ORIGINS:
            return self.map_of(ann, path)
        if origin is not None:
            return self.refuse(ann, path)
        if isinstance(ann, NewType):
            return self.type_of(ann.__supertype__, path)
        if ann in _PRIMITIVE_TYPES:
            return GType.primitive(_PRIMITIVE_TYPES[ann])
        if ann is uuid.UUID:
            return GType.primitive("str", constraints=Constraints(format="uuid"))
        if ann is EmailStr:
            return GType.primitive("str", constraints=Constraints(format="email"))
        if ann in _URL_TYPES:
            return GType.primitive("str", constraints=Constraints(format="url"))
        if isinstance(ann, type):
            if issubclass(ann, enum.Enum):
                return self.named(ann, path, self.enum_of)
            if issubclass(ann, BaseModel):
                return self.named(ann, path, self.model_of)
            if dataclasses.is_dataclass(ann):
                return self.named(ann, path, self.dataclass_of)
            if typing_extensions.is_typeddict(ann):
                return self.named(ann, path, self.typeddict_of)
        return self.refuse(ann, path)

    def refuse(self, ann: object, path: str) -> GType:
        if ann is Any or ann is object:
            reason = "Any and object say nothing about the wire format"
        elif ann in (list, dict, Sequence, Mapping, typing.List, typing.Dict):  # noqa: UP006
            reason = "a container needs its item types, e.g. list[str] or dict[str, int]"
        elif get_origin(ann) is tuple or ann is tuple:
            reason = "tuples are not supported; use list[X] or a model"
        elif get_origin(ann) in (set, frozenset) or ann in (set, frozenset):
            reason = "sets are not supported; use list[X]"
        elif isinstance(ann, (str, ForwardRef)):
            reason = "a forward reference that cannot be resolved"
        elif ann is None or ann is type(None):
            reason = "None alone is not a type; use X | None"
        else:
            reason = (
                "supported are str, int, float, bool, bytes, datetime, date, UUID, EmailStr, "
                "AnyUrl, Literal, Enum, list, dict, unions, Annotated, pydantic models, "
                "dataclasses and TypedDict"
            )
        raise self.fail(path, ann, reason)

    # -- structural kinds -------------------------------------------------------------------
    def union_of(self, ann: object, path: str) -> GType:
        args = get_args(ann)
        nullable = type(None) in args
        variants = [a for a in args if a is not type(None)]
        if len(variants) == 1:
            node = self.type_of(variants[0], path)
            return node.with_nullable(True) if nullable else node
        nodes = [self.type_of(v, path) for v in variants]
        return GType.union(*nodes, nullable=nullable)

    def literal_of(self, ann: object, path: str) -> GType:
        args = get_args(ann)
        nullable = None in args
        values = [v for v in args if v is not None]
        kinds = {type(v) for v in values}
        if not values or len(kinds) != 1 or not kinds <= {str, int, bool}:
            raise self.fail(path, ann, "Literal values must be all str, all int or all bool")
        return GType.literal(*values, nullable=nullable)

    def map_of(self, ann: object, path: str) -> GType:
        key, value = get_args(ann)
        if key not in (str, int):
            raise self.fail(path, ann, "map keys must be str or int")
        values = self.not_null(self.type_of(value, f"{path}{{}}"), f"{path}{{}}", ann)
        return GType.map(GType.primitive(_PRIMITIVE_TYPES[key]), values)

    def not_null(self, node: GType, path: str, ann: object) -> GType:
        """Refuse a nullable list item or map value: protobuf's repeated and map fields have no
        presence per element, so a null would silently arrive as 0, "" or an empty message."""
        if node.nullable:
            raise self.fail(
                path,
                ann,
                "list items and map values cannot be null on the wire (repeated fields have no "
                "per-item presence); drop None, or wrap the value in a model with an optional field",
            )
        return node

    # -- named types ------------------------------------------------------------------------
    def named(self, cls: type, path: str, build: Callable[[type, str], GType]) -> GType:
        """Build ``cls`` once, store it in ``types`` and return a ref; stop at recursion."""
        name = cls.__name__
        if not TYPE_NAME.match(name):
            raise self.fail(
                path, cls, "type names must be PascalCase letters and digits (protobuf names)"
            )
        owner = self.building.get(name, self.built.get(name))
        if owner is not None:
            if owner is not cls:
                raise self.fail(path, cls, f"two different types are named {name}")
            return GType.ref(name)
        self.building[name] = cls
        try:
            node = build(cls, path)
        finally:
            del self.building[name]
        seen = self.types.setdefault(name, node)
        if seen != node:
            raise self.fail(path, cls, f"two different types are named {name}")
        self.built[name] = cls
        return GType.ref(name)

    def enum_of(self, cls: type, path: str) -> GType:
        assert issubclass(cls, enum.Enum)
        values = [member.value for member in cls]
        kinds = {type(v) for v in values}
        if not values or len(kinds) != 1 or not (kinds <= {str} or kinds <= {int}):
            raise self.fail(path, cls, "enum values must be all str or all int")
        return GType.enum(cls.__name__, values, description=_doc(cls))

    def model_of(self, cls: type, path: str) -> GType:
        assert issubclass(cls, BaseModel)
        if not cls.__pydantic_complete__:
            try:
                cls.model_rebuild()
            except Exception as exc:  # pydantic's own errors about undefined names
                raise self.fail(path, cls, f"the model cannot be completed: {exc}") from exc
        if cls.model_computed_fields:
            raise self.fail(path, cls, "computed fields are not supported")
        checks = self.field_validators(cls, path)
        fields = [
            self.pydantic_field(cls, name, info, path, checks.get(name, ()) + checks.get("*", ()))
            for name, info in cls.model_fields.items()
        ]
        return GType.object(cls.__name__, fields, description=_doc(cls))

    def dataclass_of(self, cls: type, path: str) -> GType:
        pydantic_fields: dict[str, FieldInfo] | None = getattr(cls, "__pydantic_fields__", None)
        if pydantic_fields is not None:
            checks = self.field_validators(cls, path)
            fields = [
                self.pydantic_field(
                    cls, name, info, path, checks.get(name, ()) + checks.get("*", ())
                )
                for name, info in pydantic_fields.items()
            ]
            return GType.object(cls.__name__, fields, description=_doc(cls))
        hints = self.hints_of(cls, path)
        out: list[Field] = []
        for f in dataclasses.fields(cls):
            fpath = self.field_path(path, f.name, cls)
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            default: object = None
            if f.default is not dataclasses.MISSING:
                default = self.json_default(f.default, fpath)
            elif f.default_factory in (list, dict):
                default = f.default_factory()
            description = f.metadata.get("description", "")
            node = self.type_of(hints[f.name], fpath)
            out.append(
                Field(
                    name=f.name,
                    type=node.with_nullable(True) if f.default is None else node,
                    required=required,
                    default=None if required else default,
                    description=description if isinstance(description, str) else "",
                )
            )
        return GType.object(cls.__name__, out, description=_doc(cls))

    def typeddict_of(self, cls: type, path: str) -> GType:
        hints = self.hints_of(cls, path)
        required_keys: frozenset[str] = getattr(cls, "__required_keys__", frozenset())
        fields = [
            Field(
                name=name,
                type=self.type_of(ann, self.field_path(path, name, cls)),
                required=_typeddict_required(ann, name in required_keys),
            )
            for name, ann in hints.items()
        ]
        return GType.object(cls.__name__, fields, description=_doc(cls))

    # -- fields -----------------------------------------------------------------------------
    def pydantic_field(
        self, cls: type, name: str, info: FieldInfo, path: str, checks: tuple[str, ...]
    ) -> Field:
        fpath = self.field_path(path, name, cls)
        if info.alias is not None and info.alias != name:
            raise self.fail(fpath, info.alias, "field aliases are not supported")
        if info.annotation is None:
            raise self.fail(fpath, "missing annotation", "the field has no annotation")
        node = self.type_of(info.annotation, fpath)
        if info.metadata:
            node = constrain(node, info.metadata, fpath, self.fail)
        if checks:
            node = constrain(node, [], fpath, self.fail, custom=checks)
        required = info.is_required()
        default: object = None
        if not required:
            if info.default_factory is not None:
                factory: object = info.default_factory
                default = [] if factory is list else {} if factory is dict else None
            elif info.default is None:
                # `x: int = None`: pydantic writes null when the field is left out.
                node = node.with_nullable(True)
            elif info.default is not PydanticUndefined:
                default = self.json_default(info.default, fpath)
        return Field(
            name=name,
            type=node,
            required=required,
            default=default,
            description=info.description or "",
        )

    def field_validators(self, cls: type, path: str) -> dict[str, tuple[str, ...]]:
        """``field_validator``s of a model or pydantic dataclass, as custom names per field.

        The name ``*`` collects validators that apply to every field.
        """
        decorators = cls.__pydantic_decorators__  # type: ignore[attr-defined]
        if decorators.validators or decorators.field_serializers or decorators.model_serializers:
            raise self.fail(
                path, cls, "v1 validators and serializers change the wire data; not supported"
            )
        out: dict[str, tuple[str, ...]] = {}
        for attr, dec in sorted(decorators.field_validators.items()):
            if dec.info.mode != "after":
                raise self.fail(
                    path,
                    cls,
                    f"field_validator {attr!r} runs in {dec.info.mode!r} mode; "
                    "only 'after' validators can be represented",
                )
            name = f"{cls.__module__}:{cls.__qualname__}.{attr}"
            register_pydantic_validator(name, dec.func, path, self.fail)
            for field_name in dec.info.fields:
                out[field_name] = (*out.get(field_name, ()), name)
        return out

    def field_path(self, path: str, name: str, owner: type) -> str:
        fpath = f"{path}.{name}"
        if not FIELD_NAME.match(name):
            raise self.fail(
                fpath, owner, "field names must be lower_snake_case (they become protobuf fields)"
            )
        return fpath

    def hints_of(self, cls: type, path: str) -> dict[str, Any]:
        try:
            return typing.get_type_hints(cls, include_extras=True)
        except Exception as exc:  # NameError, TypeError... from evaluating string annotations
            raise self.fail(path, cls, f"its annotations cannot be resolved: {exc}") from exc

    def json_default(self, value: object, path: str) -> object:
        try:
            return to_jsonable_python(value)
        except Exception as exc:  # pydantic_core.PydanticSerializationError and friends
            raise self.fail(path, value, "its default cannot be written as JSON") from exc


def _typeddict_required(ann: object, declared: bool) -> bool:
    """A TypedDict key's requiredness: an explicit Required/NotRequired wins over ``total``.

    Under ``from __future__ import annotations`` Python 3.11 cannot see the wrappers when it
    computes ``__required_keys__``, but the resolved hints still carry them (as pydantic sees).
    """
    origin = get_origin(ann)
    if origin in (typing.NotRequired, typing_extensions.NotRequired):
        return False
    if origin in (typing.Required, typing_extensions.Required):
        return True
    return declared


def _doc(cls: type) -> str:
    """The class's own docstring, cleaned; empty when it has none of its own."""
    doc = cls.__dict__.get("__doc__")
    if not isinstance(doc, str):
        return ""
    if dataclasses.is_dataclass(cls):
        # dataclasses invent "Name(field: type, ...)" when there is no docstring; skip that.
        try:
            invented = cls.__name__ + str(inspect.signature(cls)).replace(" -> None", "")
        except (TypeError, ValueError):
            invented = ""
        if doc == invented:
            return ""
    return inspect.cleandoc(doc)
