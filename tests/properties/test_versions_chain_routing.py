"""Property 16 at the catalog: which served version a call reaches, and through which steps.

A drawn history of versions (each after the first breaking or not, with or without a
transformer source), a drawn set of served versions and a requested version; ``route`` must
agree with a direct reading of SPEC §4.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.gtype import Field, GType, Method, Schema
from runtime.versions import VersionCatalog
from runtime.versions._catalog import VersionInfo
from runtime.versions._chain import MAX_HOPS
from runtime.wire import FieldLock, build_file

DAY = 86400.0
START = 1735689600.0  # 2025-01-01T00:00:00Z
SCHEMA = Schema(
    "demo",
    (GType.object("Note", [Field("text", GType.primitive("str"))]),),
    (Method("Put", GType.ref("Note"), GType.ref("Note")),),
)
DESCRIPTOR = build_file(SCHEMA, FieldLock())
SOURCE = "def forward_put_request(request):\n    return request\n"


def version_id(i: int) -> str:
    return f"2025-01-{i + 1:02d}"


def catalog_of(flags: list[tuple[bool, bool]]) -> VersionCatalog:
    infos = [VersionInfo(version_id(0), START, SCHEMA, DESCRIPTOR)]
    for i, (breaking, has_source) in enumerate(flags, start=1):
        infos.append(
            VersionInfo(
                version_id(i),
                START + i * DAY,
                SCHEMA,
                DESCRIPTOR,
                parent=version_id(i - 1),
                breaking=breaking,
                transformer_source=SOURCE if has_source else None,
            )
        )
    return VersionCatalog("demo", infos, {})


def expected_route(
    flags: list[tuple[bool, bool]], requested: int, served: set[int]
) -> tuple[int, int] | None:
    """SPEC §4 read directly: (target index, hops) or None."""
    if requested in served:
        return requested, 0
    for target in sorted(served, reverse=True):
        if target < requested or target - requested > MAX_HOPS:
            continue
        # flags[i - 1] describes version i; version i is reachable from i - 1 when it is not
        # breaking, or when it is and someone wrote its transformers.
        if all(not flags[i - 1][0] or flags[i - 1][1] for i in range(requested + 1, target + 1)):
            return target, target - requested
    return None


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[tuple[bool, bool]], int, set[int]]:
    flags = draw(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=MAX_HOPS + 3))
    count = len(flags) + 1
    requested = draw(st.integers(0, count - 1))
    served = draw(st.sets(st.integers(0, count - 1), min_size=1))
    return flags, requested, served


@given(cases())
@settings(max_examples=200, deadline=None)
def test_route_reaches_the_newest_served_version_a_chain_allows(
    case: tuple[list[tuple[bool, bool]], int, set[int]],
) -> None:
    """Property 16: Breaking versions with no transformers are routed by header.

    A served version is used as is. Otherwise the call goes to the newest served version that
    a chain of at most MAX_HOPS steps reaches, each step compatible or with transformers. A
    breaking version with no transformer source is never reached from an older one: callers of
    the older version keep being served by it, side by side, picked by ``x-api-version``.
    """
    flags, requested, served = case
    catalog = catalog_of(flags)
    got = catalog.route(version_id(requested), [version_id(i) for i in served])
    want = expected_route(flags, requested, served)
    if want is None:
        assert got is None
        return
    assert got is not None
    target, steps = got
    assert target == version_id(want[0])
    assert [(s.from_version, s.to_version) for s in steps] == [
        (version_id(i - 1), version_id(i)) for i in range(requested + 1, want[0] + 1)
    ]
    # Every version is addressable by its own id through x-api-version.
    assert catalog.resolve(version_id(requested)) == version_id(requested)
