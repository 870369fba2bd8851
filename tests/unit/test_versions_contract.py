"""The caller's contract: validation at the caller's own version, removed methods, reflection."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import Unimplemented, ValidationFailed
from runtime.gtype import Field, GType, Method, Schema
from runtime.versions import VersionCatalog, plan
from runtime.versions._catalog import VersionInfo
from runtime.versions._contract import check_request, method_error
from runtime.wire import FieldLock, build_file

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def users() -> VersionCatalog:
    return VersionCatalog.from_module_dir("users", REPO / "modules" / "users", {"stable": "2025-06-01"})


def test_an_old_request_is_judged_by_its_own_versions_fields_and_constraints(users: VersionCatalog) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_request(users, "2025-01-15", "CreateUser", {"name": "", "email": "x"})
    assert [v.path for v in caught.value.violations] == ["name", "email"]
    assert "given_name" not in str(caught.value)
    assert str(caught.value).startswith("invalid users.CreateUser request (version 2025-01-15): name:")

    with pytest.raises(ValidationFailed) as too_long:
        check_request(users, "2025-01-15", "CreateUser", {"name": "x" * 201, "email": "a@example.com"})
    assert [(v.path, v.expected) for v in too_long.value.violations] == [("name", "string of at most 200 characters")]

    check_request(users, "2025-01-15", "CreateUser", {"name": " Grace", "email": "g@example.com"})
    with pytest.raises(ValidationFailed, match="given_name"):  # the new shape is no old request
        check_request(users, "2025-01-15", "CreateUser", {"given_name": "G", "email": "g@example.com"})


def _catalog(*versions: tuple[str, float, tuple[str, ...]]) -> VersionCatalog:
    """A module whose versions have the methods named, each taking and giving a ``Note``."""
    note = GType.object("Note", [Field("text", GType.primitive("str"))])
    lock = FieldLock()
    infos, parent, built = [], None, []
    for version, created, methods in versions:
        schema = Schema("notes", (note,), tuple(Method(m, GType.ref("Note"), GType.ref("Note")) for m in methods))
        fdp = build_file(schema, lock, previous=built)
        built.append(fdp)
        infos.append(VersionInfo(version, created, schema, fdp, parent=parent, breaking=parent is not None))
        parent = version
    return VersionCatalog("notes", infos, {})


def test_a_removed_method_is_unimplemented_naming_the_version_that_removed_it() -> None:
    notes = _catalog(
        ("2025-01-15", 1736899200.0, ("ListNotes", "PutNote")),
        ("2025-03-01", 1740787200.0, ("PutNote",)),
        ("2025-06-01", 1748736000.0, ("PutNote",)),
    )
    error = method_error(notes, "2025-01-15", "2025-06-01", "ListNotes")
    assert isinstance(error, Unimplemented)
    assert "notes.ListNotes was removed in version 2025-03-01" in error.message
    assert method_error(notes, "2025-01-15", "2025-06-01", "PutNote") is None
    assert method_error(notes, "2025-01-15", "2025-01-15", "ListNotes") is None
    newer = method_error(notes, "2025-06-01", "2025-06-01", "ListNotes")
    assert isinstance(newer, Unimplemented)
    assert newer.message == (
        "notes.ListNotes is not part of version 2025-06-01 of notes: it was removed in version "
        "2025-03-01 (the last version with it is 2025-01-15)"
    )
    # Pinned to a version that has it, served by one that lacks it, and no route back.
    assert "a caller at 2025-01-15 reaches it only where a worker serves 2025-01-15 itself" in error.message


def test_a_method_added_later_is_unimplemented_for_older_callers_naming_when_it_came() -> None:
    notes = _catalog(
        ("2025-01-15", 1736899200.0, ("PutNote",)),
        ("2025-06-01", 1748736000.0, ("PutNote", "Search")),
    )
    error = method_error(notes, "2025-01-15", "2025-06-01", "Search")
    assert isinstance(error, Unimplemented)
    assert error.message == "notes.Search is not part of version 2025-01-15 of notes: it was added in version 2025-06-01"
    assert method_error(notes, "2025-06-01", "2025-06-01", "Search") is None


async def test_plan_refuses_a_removed_method_whatever_serves_and_waits_for_a_worker_otherwise() -> None:
    """Breaking steps without transformers: a 2025-01-15 call reaches only a 2025-01-15 worker."""
    notes = _catalog(
        ("2025-01-15", 1736899200.0, ("ListNotes", "PutNote")),
        ("2025-06-01", 1748736000.0, ("PutNote",)),
    )
    assert plan(notes, "PutNote", "2025-01-15", ("2025-06-01",)) is None  # a worker may come back
    assert plan(notes, "ListNotes", "2025-01-15", ("2025-01-15", "2025-06-01")) == ("2025-01-15", None)
    for version in ("2025-01-15", "2025-06-01"):  # no route back, and the newest at its own version
        planned = plan(notes, "ListNotes", version, ("2025-06-01",))
        assert planned is not None and planned[0] == "2025-06-01" and planned[1] is not None
        with pytest.raises(Unimplemented, match=r"notes\.ListNotes .*removed in version 2025-06-01"):
            await planned[1].request(b"", None)
    assert plan(notes, "ListNotes", "2025-01-15", ()) is None  # nothing served at all
