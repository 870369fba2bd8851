"""Generated manifests: gRPC names, canonical JSON round trips, and content hashes that mean something."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.errors import ManifestError
from runtime.gtype import Field, GType, Schema
from runtime.manifest import LoadedModule, build_manifests, load_module, service_name
from runtime.manifest._names import method_path, package_name
from runtime.manifest._record import HandlerManifest, ModuleManifestRecord, type_ref
from tests.fixtures.manifest_packages import PackageFactory, module_toml

HANDLERS = """
from runtime import handler
from {pkg}.models import CreateUserRequest, GetUserRequest, User


@handler
async def create_user(req: CreateUserRequest, lctx, gctx) -> User:
    return User(id=1, name=req.name)


@handler
def get_user(req: GetUserRequest, lctx, gctx) -> User:
    return User(id=req.id, name="x")
"""

HOOKS = """
async def audit(lctx):
    return None


def check(lctx):
    return None
"""

TOML = """
[capabilities]
modules = ["inventory", "billing"]

[versions]
stable = "2025-06-01"

[methods.CreateUser]
roles = ["users:write"]
rate_limit = "10/minute"
idempotent = true

[[hooks]]
id = "audit"
phase = "before"
target = "{pkg}.users.hooks:audit"

[[hooks]]
id = "check"
phase = "catch"
target = "{pkg}.users.hooks:check"
method = "CreateUser"
retries = 1
"""


@pytest.fixture
def packages(tmp_path: Path) -> Iterator[PackageFactory]:
    with PackageFactory(tmp_path) as factory:
        yield factory


def load(
    packages: PackageFactory, root: Path, *, name: str | None = None, toml: str = TOML
) -> LoadedModule:
    files = {
        "users/module.toml": module_toml("users", toml),
        "users/handlers.py": HANDLERS,
        "users/hooks.py": HOOKS,
    }
    pkg = packages.make(files, name=name)
    return load_module(root / pkg / "users")


def test_grpc_names_of_a_module() -> None:
    assert package_name("users") == "users.v1"
    assert service_name("users") == "users.v1.UsersService"
    assert service_name("order_items") == "order_items.v1.OrderItemsService"
    assert method_path("users", "CreateUser") == "/users.v1.UsersService/CreateUser"


def test_build_manifests_records_each_handler(packages: PackageFactory, tmp_path: Path) -> None:
    loaded = load(packages, tmp_path)
    record = build_manifests(loaded, version="2025-06-01")
    assert (record.name, record.semver, record.version, record.warm_pool) == (
        "users",
        "1.0.0",
        "2025-06-01",
        1,
    )
    assert record.labels == (("stable", "2025-06-01"),)
    assert record.schema_fingerprint == loaded.schema.fingerprint()
    create = record.handler("CreateUser")
    assert create.path == "/users.v1.UsersService/CreateUser"
    assert (create.request.name, create.response.name) == ("CreateUserRequest", "User")
    assert create.policy.roles == ("users:write",) and create.policy.idempotent
    assert create.dependencies == ("billing", "inventory")
    assert [(h.id, h.level, h.mode, h.retries) for h in create.hooks] == [
        ("audit", "module", "async", 0),
        ("check", "handler", "sync", 1),
    ]
    assert [h.id for h in record.handler("GetUser").hooks] == ["audit"]
    assert record.handler("GetUser").response == create.response


def test_json_round_trip_is_exact_and_canonical(packages: PackageFactory, tmp_path: Path) -> None:
    record = build_manifests(load(packages, tmp_path), version="tsv:1750000000-users-2")
    text = record.canonical_json()
    again = ModuleManifestRecord.from_json(json.loads(text))
    assert again == record and again.canonical_json() == text
    one = record.handlers[0]
    assert HandlerManifest.from_json(json.loads(one.canonical_json())) == one
    assert (
        json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        == text
    )


def test_tampered_content_is_refused(packages: PackageFactory, tmp_path: Path) -> None:
    record = build_manifests(load(packages, tmp_path), version="2025-06-01")
    data = json.loads(record.canonical_json())
    data["handlers"][0]["policy"]["public"] = True
    with pytest.raises(ManifestError, match=r"content hash .* does not match"):
        ModuleManifestRecord.from_json(data)
    broken = json.loads(record.handlers[0].canonical_json())
    del broken["path"]
    with pytest.raises(ManifestError, match="malformed"):
        HandlerManifest.from_json(broken)


def record_at(root: Path, toml: str = TOML) -> ModuleManifestRecord:
    """Build the fixture module under ``root`` with one fixed package name, then forget it."""
    with PackageFactory(root) as factory:
        return build_manifests(
            load(factory, root, name="modrpc_fixture_same", toml=toml), version="2025-06-01"
        )


def test_the_content_hash_does_not_depend_on_the_checkout_folder(tmp_path: Path) -> None:
    first, second = record_at(tmp_path / "a"), record_at(tmp_path / "b")
    assert first.content_hash == second.content_hash
    assert first.handlers[0].hooks[0].file == "modrpc_fixture_same/users/hooks.py"


def test_the_content_hash_changes_with_policy_and_only_for_that_method(tmp_path: Path) -> None:
    base = record_at(tmp_path / "a")
    stricter = record_at(tmp_path / "b", TOML.replace("10/minute", "5/minute"))
    assert base.handler("GetUser").content_hash == stricter.handler("GetUser").content_hash
    assert base.handler("CreateUser").content_hash != stricter.handler("CreateUser").content_hash
    assert base.content_hash != stricter.content_hash


def test_a_bad_version_id_is_refused(packages: PackageFactory, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="'stable' is not a version id"):
        build_manifests(load(packages, tmp_path), version="stable")


def _schema(street_type: str, other_type: str = "int") -> Schema:
    address = GType.object("Address", [Field("street", GType.primitive(street_type))])
    request = GType.object(
        "Req", [Field("address", GType.ref("Address")), Field("n", GType.primitive("int"))]
    )
    other = GType.object("Other", [Field("x", GType.primitive(other_type))])
    return Schema(module="users", types=(address, request, other))


def test_a_type_fingerprint_covers_the_types_it_reaches_and_nothing_else() -> None:
    before = type_ref(_schema("str"), GType.ref("Req"))
    after = type_ref(_schema("bytes"), GType.ref("Req"))
    assert before.name == after.name == "Req"
    assert before.fingerprint != after.fingerprint
    assert (
        type_ref(_schema("str", other_type="str"), GType.ref("Req")).fingerprint
        == before.fingerprint
    )
    assert type_ref(_schema("str"), GType.ref("Address")).fingerprint != before.fingerprint
