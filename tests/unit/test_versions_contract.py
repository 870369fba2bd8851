"""The caller's contract: validation at the caller's own version, removed methods, reflection."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import Unimplemented, ValidationFailed
from runtime.gtype import Field, GType, Method, Schema
from runtime.versions import VersionCatalog
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
    assert isinstance(newer, Unimplemented) and "is not part of version 2025-06-01" in newer.message
