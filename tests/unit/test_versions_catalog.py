"""``VersionCatalog``: routing a call to a served version, steps, and building from files or records."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import NotFound
from runtime.gtype import Field, GType, Method, Schema
from runtime.store import VersionRecord
from runtime.versions import VersionCatalog, encode_descriptor, run_chain
from runtime.versions._catalog import VersionInfo, decode_descriptor
from runtime.versions._chain import MAX_HOPS
from runtime.wire import FieldLock, build_file

REPO = Path(__file__).resolve().parents[2]
DAY = 86400.0
START = 1735689600.0  # 2025-01-01T00:00:00Z
SCHEMA = Schema(
    "demo",
    (GType.object("Note", [Field("text", GType.primitive("str"))]),),
    (Method("Put", GType.ref("Note"), GType.ref("Note")),),
)
DESCRIPTOR = build_file(SCHEMA, FieldLock())
SOURCE = (
    'def forward_put_request(request):\n    return {**request, "text": request["text"] + "!"}\n'
)


def _vid(i: int) -> str:
    return f"2025-01-{i + 1:02d}"


def _info(i: int, *, breaking: bool = False, source: str | None = None) -> VersionInfo:
    return VersionInfo(
        _vid(i),
        START + i * DAY,
        SCHEMA,
        DESCRIPTOR,
        parent=_vid(i - 1) if i else None,
        breaking=breaking,
        transformer_source=source,
    )


def _history() -> VersionCatalog:
    """v0; v1 compatible; v2 breaking with transformers; v3 breaking without any."""
    return VersionCatalog(
        "demo",
        [_info(0), _info(1), _info(2, breaking=True, source=SOURCE), _info(3, breaking=True)],
        {"stable": _vid(2)},
    )


def test_a_served_version_is_used_directly() -> None:
    catalog = _history()
    assert catalog.route(_vid(1), served=[_vid(1), _vid(2)]) == (_vid(1), [])


async def test_an_unserved_version_reaches_the_newest_served_version_through_its_steps() -> None:
    catalog = _history()
    route = catalog.route(_vid(0), served=[_vid(2)])
    assert route is not None
    target, steps = route
    assert target == _vid(2)
    assert [(s.from_version, s.to_version) for s in steps] == [
        (_vid(0), _vid(1)),
        (_vid(1), _vid(2)),
    ]
    assert steps[0].forward == {} and steps[0].backward == {}  # compatible: an identity step
    assert await run_chain(steps, "Put", {"text": "hi"}, direction="forward") == {"text": "hi!"}


def test_a_breaking_version_without_transformers_is_not_reachable() -> None:
    """Property 16 at the catalog: such a version is served side by side, never routed into."""
    catalog = _history()
    assert catalog.step_into(_vid(3)) is None
    assert catalog.chain(_vid(2), _vid(3)) is None
    assert catalog.route(_vid(2), served=[_vid(3)]) is None
    # Served next to it, the older version keeps its callers; the newer takes its own.
    assert catalog.route(_vid(2), served=[_vid(2), _vid(3)]) == (_vid(2), [])
    assert catalog.route(_vid(3), served=[_vid(2), _vid(3)]) == (_vid(3), [])


def test_an_unreachable_newest_version_falls_back_to_an_older_served_one() -> None:
    catalog = _history()
    route = catalog.route(_vid(1), served=[_vid(3), _vid(2)])
    assert route is not None and route[0] == _vid(2)


def test_a_version_is_never_routed_back_to_an_older_one() -> None:
    assert _history().route(_vid(2), served=[_vid(0), _vid(1)]) is None


def test_chains_stop_at_ten_hops() -> None:
    catalog = VersionCatalog("demo", [_info(i) for i in range(MAX_HOPS + 2)], {})
    assert catalog.chain(_vid(0), _vid(MAX_HOPS + 1)) is None
    assert catalog.route(_vid(0), served=[_vid(MAX_HOPS + 1)]) is None
    ten = catalog.chain(_vid(1), _vid(MAX_HOPS + 1))
    assert ten is not None and len(ten) == MAX_HOPS
    route = catalog.route(_vid(0), served=[_vid(MAX_HOPS + 1), _vid(MAX_HOPS)])
    assert route is not None and route[0] == _vid(MAX_HOPS) and len(route[1]) == MAX_HOPS


def test_resolution_uses_labels_and_instants() -> None:
    catalog = _history()
    assert catalog.resolve(None) == _vid(2)  # stable
    assert catalog.resolve("latest") == _vid(3)
    assert catalog.resolve("2025-01-02T12:00:00Z") == _vid(1)
    with pytest.raises(NotFound):
        catalog.resolve("2024-12-01")


def test_a_module_with_no_versions_is_not_found() -> None:
    with pytest.raises(NotFound, match="demo"):
        VersionCatalog("demo", [], {})


def test_descriptors_survive_the_store_encoding() -> None:
    assert decode_descriptor(encode_descriptor(DESCRIPTOR)) == DESCRIPTOR


async def test_the_users_module_routes_2025_01_15_through_its_real_transformers() -> None:
    catalog = VersionCatalog.from_module_dir(
        "users", REPO / "modules" / "users", {"stable": "2025-06-01"}
    )
    assert [v.id for v in catalog.versions] == ["2025-01-15", "2025-06-01"]
    step = catalog.step_into("2025-06-01")
    assert step is not None
    assert set(step.forward) == {"CreateUser"} and set(step.backward) == {"CreateUser", "GetUser"}
    route = catalog.route("2025-01-15", served=["2025-06-01"])
    assert route is not None and route[0] == "2025-06-01"
    request = {"name": "Grace Brewster Hopper", "email": "grace@example.com"}
    forwarded = await run_chain(route[1], "CreateUser", request, direction="forward")
    assert forwarded == {
        "given_name": "Grace",
        "family_name": "Brewster Hopper",
        "email": "grace@example.com",
    }


def test_the_gateway_view_from_store_records_matches_the_files() -> None:
    files = VersionCatalog.from_module_dir("users", REPO / "modules" / "users", {})
    source = (REPO / "modules/users/transformers/v2025_06_01.py").read_text()
    records = [
        VersionRecord(
            id=v.id,
            created_at=v.created_at,
            schema=v.schema.to_json(),
            fingerprint=v.schema.fingerprint(),
            manifest={},
            breaking=v.breaking,
            parent=v.parent,
            transformers={"source": source} if v.parent else {},
            metadata={"descriptor": encode_descriptor(v.descriptor)},
        )
        for v in files.versions
    ]
    stored = VersionCatalog.from_records("users", records, {})
    assert [(v.id, v.parent, v.breaking, v.schema, v.descriptor) for v in stored.versions] == [
        (v.id, v.parent, v.breaking, v.schema, v.descriptor) for v in files.versions
    ]
    step = stored.step_into("2025-06-01")
    assert step is not None and set(step.backward) == {"CreateUser", "GetUser"}
