"""Hypothesis strategies for GType schemas and for values that do or do not fit them.

The other gtype property tests import these. The one property here pins the strategies
themselves: a value built to fit a schema is accepted by ``validate`` with no violation, so the
properties that inject faults into such values start from a clean slate.
"""

from __future__ import annotations

import copy
import functools
import string
from datetime import date, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from runtime.gtype import (
    Constraints,
    Field,
    GType,
    Method,
    Schema,
    register_custom_validator,
    validate,
)
from runtime.gtype._checks import check_pattern

NOT_THIRTEEN = "tests.gtype:not_thirteen"
NOT_NEGATIVE = "tests.gtype:not_negative"
NO_STRAY = "tests.gtype:no_stray"
UNREGISTERED = "tests.gtype:never_registered"
"""A custom validator name nobody registers: validate must skip it."""


def not_thirteen(value: object) -> bool:
    """Fails (returns False) for 13 and "thirteen"."""
    return not (value == 13 or value == "thirteen")


def not_negative(value: object) -> bool:
    """Fails (raises ValueError) for negative numbers."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ValueError("negative")
    return True


def no_stray(value: object) -> bool:
    """Fails an object that has a key named "stray" (noisy values add one)."""
    return not (isinstance(value, dict) and "stray" in value)


register_custom_validator(NOT_THIRTEEN, not_thirteen)
register_custom_validator(NO_STRAY, no_stray)
register_custom_validator(NOT_NEGATIVE, not_negative)

PATTERNS = (r"^[a-z]+$", r"^[A-Z][a-z0-9]*$", r"[0-9]")
FORMAT_VALUES: dict[str, SearchStrategy[str]] = {
    "email": st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.(com|org)", fullmatch=True),
    "uuid": st.uuids().map(str),
    "url": st.from_regex(r"https?://[a-z]{1,10}\.(com|org)(/[a-z]{0,5})?", fullmatch=True),
}
FIELD_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(lambda n: n != "stray")
SAFE_INTS = st.integers(0, 40).filter(lambda i: i != 13)
SAFE_TEXT = st.text(string.ascii_lowercase, min_size=1, max_size=6).filter(
    lambda s: s != "thirteen"
)
JSON_JUNK: SearchStrategy[Any] = st.recursive(
    st.none()
    | st.sampled_from((13, -5, "thirteen", 2.5))  # values the custom validators reject
    | st.booleans()
    | st.integers(-100, 100)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.binary(max_size=3),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


# -- schema nodes -------------------------------------------------------------------------------
@st.composite
def primitive_nodes(draw: st.DrawFn) -> GType:
    """A primitive with constraints that fit it, sometimes custom validators, maybe nullable."""
    name = draw(st.sampled_from(("str", "int", "float", "bool", "bytes", "datetime", "date")))
    c: dict[str, Any] = {}
    custom: tuple[str, ...] = ()
    if name == "str":
        choice = draw(st.sampled_from(("none", "length", "pattern", "format", "enum")))
        if choice == "length":
            low = draw(st.none() | st.integers(0, 3))
            c["min_length"] = low
            c["max_length"] = draw(st.none() | st.integers(low or 0, 6))
        elif choice == "pattern":
            c["pattern"] = draw(st.sampled_from(PATTERNS))
        elif choice == "format":
            c["format"] = draw(st.sampled_from(sorted(FORMAT_VALUES)))
        elif choice == "enum":
            c["enum"] = tuple(draw(st.lists(SAFE_TEXT, min_size=1, max_size=3, unique=True)))
        custom = draw(st.sampled_from(((), (NOT_THIRTEEN,), (UNREGISTERED,))))
    elif name in ("int", "float"):
        with_custom = draw(st.booleans())
        low = draw(st.integers(0 if with_custom else -20, 20))
        high = low + draw(st.integers(3, 30))
        if draw(st.booleans()):
            c[draw(st.sampled_from(("gt", "ge")))] = low if name == "int" else low + 0.5
        elif with_custom:
            c["ge"] = 0
        if draw(st.booleans()):
            c[draw(st.sampled_from(("lt", "le")))] = high
        if with_custom:
            custom = draw(
                st.sampled_from(((NOT_THIRTEEN,), (NOT_NEGATIVE,), (NOT_NEGATIVE, NOT_THIRTEEN)))
            )
    elif name == "bytes" and draw(st.booleans()):
        c["min_length"] = draw(st.integers(0, 2))
        c["max_length"] = draw(st.integers(c["min_length"], 4))
    constraints = Constraints(**{k: v for k, v in c.items() if v is not None}, custom=custom)
    return GType.primitive(name, constraints=constraints, nullable=draw(st.booleans()))


def literal_nodes() -> SearchStrategy[GType]:
    values = (
        st.lists(SAFE_TEXT, min_size=1, max_size=3, unique=True)
        | st.lists(SAFE_INTS, min_size=1, max_size=3, unique=True)
        | st.sampled_from(([True], [False], [True, False]))
    )
    return st.builds(
        lambda vs, nullable: GType.literal(*vs, nullable=nullable), values, st.booleans()
    )


@functools.cache
def nodes(refs: tuple[str, ...], depth: int) -> SearchStrategy[GType]:
    """Any node kind; refs point only at ``refs`` (types defined earlier)."""
    leaves: list[SearchStrategy[GType]] = [primitive_nodes(), literal_nodes()]
    if refs:
        leaves.append(
            st.builds(
                lambda name, nullable, custom: GType.ref(
                    name, nullable=nullable, constraints=Constraints(custom=custom)
                ),
                st.sampled_from(refs),
                st.booleans(),
                st.sampled_from(((), (NOT_THIRTEEN,), (NO_STRAY,))),
            )
        )
    if depth == 0:
        return st.one_of(leaves)
    inner = nodes(refs, depth - 1)
    arrays = st.builds(
        lambda items, low, nullable: GType.array(
            items, constraints=Constraints(min_length=low), nullable=nullable
        ),
        inner,
        st.none() | st.integers(0, 2),
        st.booleans(),
    )
    maps = st.builds(
        lambda key, items, high: GType.map(
            GType.primitive(key), items, constraints=Constraints(max_length=high)
        ),
        st.sampled_from(("str", "int")),
        inner,
        st.none() | st.integers(2, 4),
    )
    variant = st.one_of(leaves).map(lambda n: n.with_nullable(False))
    unions = st.builds(
        lambda vs, nullable: GType.union(*vs, nullable=nullable),
        st.lists(variant, min_size=2, max_size=3),
        st.booleans(),
    )
    return st.one_of(*leaves, arrays, maps, unions)


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    """A schema of 0-2 enums and 1-4 objects (each may hold an array of itself) and 1-3 methods."""
    types: list[GType] = []
    for i in range(draw(st.integers(0, 2))):
        values = draw(
            st.lists(SAFE_TEXT, min_size=1, max_size=4, unique=True)
            | st.lists(SAFE_INTS, min_size=1, max_size=4, unique=True)
        )
        types.append(GType.enum(f"Enum{i}", values))
    objects: list[str] = []
    for i in range(draw(st.integers(1, 4))):
        name = f"Type{i}"
        refs = tuple(t.name for t in types)
        names = draw(st.lists(FIELD_NAMES, max_size=5, unique=True))
        fields = [
            Field(name=n, type=draw(nodes(refs, 2)), required=draw(st.booleans())) for n in names
        ]
        if draw(st.booleans()) and "children" not in names:
            fields.append(Field("children", GType.array(GType.ref(name)), required=False))
        custom = draw(st.sampled_from(((), (NO_STRAY,), (UNREGISTERED, NO_STRAY))))
        types.append(GType.object(name, fields, constraints=Constraints(custom=custom)))
        objects.append(name)
    methods = [
        Method(
            name=f"Call{i}",
            request=GType.ref(draw(st.sampled_from(objects))),
            response=GType.ref(draw(st.sampled_from(objects))),
        )
        for i in range(draw(st.integers(1, 3)))
    ]
    return Schema(module="props", types=tuple(types), methods=tuple(methods))


# -- values -------------------------------------------------------------------------------------
def passes_custom(value: object, names: tuple[str, ...]) -> bool:
    """Whether the registered custom validators in ``names`` accept ``value``."""
    if NOT_THIRTEEN in names and not not_thirteen(value):
        return False
    if NO_STRAY in names and not no_stray(value):
        return False
    try:
        return not_negative(value) if NOT_NEGATIVE in names else True
    except ValueError:
        return False


def values(
    node: GType, schema: Schema, depth: int = 0, *, noisy: bool = False
) -> SearchStrategy[Any]:
    """Values ``validate(value, node, schema)`` accepts with no violation.

    With ``noisy``, scalars are sometimes near misses (just out of bounds, too long, rejected
    by a custom validator, the wrong type) and objects sometimes lose a field or gain one, so
    the result breaks the schema in several places at once.
    """
    if node.kind == "ref":
        base = values(schema.type(node.name), schema, depth, noisy=noisy)
    else:
        base = _values_of(node, schema, depth, noisy)
    custom = node.constraints.custom
    if custom and not noisy:
        base = base.filter(lambda v: v is None or passes_custom(v, custom))
    if noisy and node.kind in ("primitive", "literal", "enum"):
        base = base | _near_misses(node)
    return st.none() | base if node.nullable else base


def _near_misses(node: GType) -> SearchStrategy[Any]:
    """Values close to what ``node`` accepts but (mostly) not accepted."""
    c = node.constraints
    misses: list[Any] = [13, -5, "thirteen", 2.5, True, None, "", "x" * 8]
    for bound in (c.gt, c.ge, c.lt, c.le):
        if bound is not None:
            misses += [bound - 1, bound, bound + 1]
    if c.max_length is not None:
        misses.append("y" * (c.max_length + 1))
    return st.sampled_from(misses)


def _values_of(node: GType, schema: Schema, depth: int, noisy: bool) -> SearchStrategy[Any]:
    c = node.constraints
    if node.kind == "primitive":
        return _primitive_values(node)
    if node.kind in ("literal", "enum"):
        return st.sampled_from(node.values)
    if node.kind == "union":
        return st.one_of([values(v, schema, depth, noisy=noisy) for v in node.variants])
    if node.kind == "array":
        assert node.items is not None
        if depth >= 3 and not c.min_length:
            return st.just([])
        return st.lists(
            values(node.items, schema, depth + 1, noisy=noisy),
            min_size=c.min_length or 0,
            max_size=3,
        )
    if node.kind == "map":
        assert node.keys is not None and node.items is not None
        if depth >= 3:
            return st.just({})
        keys: SearchStrategy[Any] = (
            st.text(string.ascii_letters + '" .', max_size=4)
            if node.keys.name == "str"
            else st.integers(-5, 50) | st.integers(0, 50).map(str)
        )
        high = 3 if c.max_length is None else min(3, c.max_length)
        return st.dictionaries(
            keys, values(node.items, schema, depth + 1, noisy=noisy), max_size=high
        )
    # object
    required = {
        f.name: values(f.type, schema, depth + 1, noisy=noisy) for f in node.fields if f.required
    }
    optional = {
        f.name: values(f.type, schema, depth + 1, noisy=noisy)
        for f in node.fields
        if not f.required and depth < 3
    }
    if noisy:
        # Required fields may go missing, and a stray key may turn up.
        optional = {**optional, **required, "stray": JSON_JUNK}
        required = {}
    return st.fixed_dictionaries(required, optional=optional)


def _primitive_values(node: GType) -> SearchStrategy[Any]:
    c = node.constraints
    name = node.name
    if name == "str":
        if c.pattern:
            base: SearchStrategy[Any] = _pattern_values(c.pattern)
        elif c.format:
            base = FORMAT_VALUES[c.format]
        elif c.enum:
            base = st.sampled_from(c.enum)
        else:
            base = st.text(min_size=c.min_length or 0, max_size=c.max_length)
        low, high = c.min_length or 0, c.max_length
        return base.filter(
            lambda v: (
                low <= len(v) <= (len(v) if high is None else high) and passes_custom(v, c.custom)
            )
        )
    if name in ("int", "float"):
        low = c.gt if c.gt is not None else c.ge
        high = c.lt if c.lt is not None else c.le
        if name == "int":
            lo = None if low is None else int(low) + (1 if c.gt is not None else 0)
            hi = None if high is None else int(high) - (1 if c.lt is not None else 0)
            base = st.integers(lo, hi)
        else:
            base = st.floats(
                low,
                high,
                exclude_min=c.gt is not None,
                exclude_max=c.lt is not None,
                allow_nan=False,
                allow_infinity=False,
            )
        return base.filter(lambda v: passes_custom(v, c.custom))
    if name == "bool":
        return st.booleans()
    if name == "bytes":
        return st.binary(
            min_size=c.min_length or 0, max_size=4 if c.max_length is None else c.max_length
        )
    if name == "datetime":
        moments = st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1))
        return moments | moments.map(datetime.isoformat)
    days = st.dates(date(1970, 1, 1), date(2100, 1, 1))
    return days | days.map(date.isoformat)


@functools.cache
def _pattern_values(pattern: str) -> SearchStrategy[str]:
    # Hypothesis reads patterns as Python's re does ("$" also before a final newline); the
    # schema's patterns are RE2, as buf.validate runs them, so keep what RE2 matches.
    return st.from_regex(pattern).filter(lambda v: check_pattern(pattern, v))


def positions(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) inside a JSON-like value, for mutating it."""
    out: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((value, k))
            out += positions(v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((value, i))
            out += positions(v)
    return out


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with one random change: a part replaced by junk, removed, or a key added."""
    value = copy.deepcopy(value)
    places = positions(value)
    if not places:
        return draw(JSON_JUNK)
    container, key = draw(st.sampled_from(places))
    action = draw(st.sampled_from(("replace", "remove", "add")))
    if action == "replace":
        container[key] = draw(JSON_JUNK)
    elif action == "remove":
        del container[key]
    elif isinstance(container, dict):
        container[draw(st.text(max_size=4))] = draw(JSON_JUNK)
    else:
        container.append(draw(JSON_JUNK))
    return value


@st.composite
def any_values(draw: st.DrawFn, node: GType, schema: Schema) -> Any:
    """A valid value, a noisy one, a valid value with one random change, or junk."""
    choice = draw(st.sampled_from(("valid", "noisy", "mutated", "junk")))
    if choice == "valid":
        return draw(values(node, schema))
    if choice == "noisy":
        return draw(values(node, schema, noisy=True))
    if choice == "mutated":
        return draw(mutated(draw(values(node, schema))))
    return draw(JSON_JUNK)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_values_built_to_fit_a_schema_validate_clean(data: st.DataObject) -> None:
    """Values built to fit each named type of a random schema have no violations.

    (Supports Properties 12 and 13: their fault injection starts from values known to be valid.)
    """
    schema = data.draw(schemas())
    for t in schema.types:
        value = data.draw(values(GType.ref(t.name), schema))
        assert validate(value, GType.ref(t.name), schema) == []
