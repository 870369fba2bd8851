"""Loading a module folder: handlers in order, hooks resolved, and every refusal naming its cause."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import runtime.manifest
from runtime.errors import HandlerShapeError, ManifestError
from runtime.manifest import discover_modules, load_module
from tests.fixtures.manifest_packages import PackageFactory, module_toml

HANDLERS = """
from runtime import handler
from {pkg}.models import CreateUserRequest, GetUserRequest, User


@handler
async def create_user(req: CreateUserRequest, lctx, gctx) -> User:
    return User(id=1, name=req.name)


@handler(name="FetchUser")
def get_user(req: GetUserRequest, lctx, gctx) -> User:
    return User(id=req.id, name="x")


@handler
async def delete_user(req: GetUserRequest, lctx, gctx) -> User:
    return User(id=req.id, name="x")


def helper(x):
    return x
"""

HOOKS = """
async def audit(lctx):
    return None


def normalise(lctx):
    return None


class Recorder:
    @staticmethod
    def record(lctx):
        return None


not_callable = 3
"""


@pytest.fixture
def packages(tmp_path: Path) -> Iterator[PackageFactory]:
    with PackageFactory(tmp_path) as factory:
        yield factory


def make(
    packages: PackageFactory, tmp_path: Path, toml_body: str = "", handlers: str = HANDLERS
) -> Path:
    pkg = packages.make(
        {
            "users/module.toml": module_toml("users", toml_body),
            "users/handlers.py": handlers,
            "users/hooks.py": HOOKS,
        }
    )
    return tmp_path / pkg / "users"


def test_handlers_are_collected_in_definition_order(
    packages: PackageFactory, tmp_path: Path
) -> None:
    loaded = load_module(make(packages, tmp_path))
    assert [h.handler_id for h in loaded.handlers] == [
        "users.CreateUser",
        "users.FetchUser",
        "users.DeleteUser",
    ]
    assert [m.name for m in loaded.schema.methods] == ["CreateUser", "DeleteUser", "FetchUser"]
    assert {t.name for t in loaded.schema.types} == {
        "Address",
        "CreateUserRequest",
        "GetUserRequest",
        "User",
    }
    assert loaded.handler("FetchUser").function.__name__ == "get_user"
    with pytest.raises(KeyError, match="Nope"):
        loaded.handler("Nope")


def test_hooks_resolve_with_level_mode_and_location(
    packages: PackageFactory, tmp_path: Path
) -> None:
    body = """
        [[hooks]]
        id = "audit"
        phase = "before"
        target = "{pkg}.users.hooks:audit"

        [[hooks]]
        id = "normalise"
        phase = "after"
        target = "{pkg}.users.hooks:normalise"
        method = "CreateUser"
        timeout = 0.5
        retries = 2

        [[hooks]]
        id = "record"
        phase = "catch"
        target = "{pkg}.users.hooks:Recorder.record"
    """
    directory = make(packages, tmp_path, body)
    loaded = load_module(directory)
    audit, normalise, record = loaded.hooks
    assert (audit.level, audit.is_async, audit.line) == ("module", True, 2)
    assert (normalise.level, normalise.is_async, normalise.line, normalise.method) == (
        "handler",
        False,
        6,
        "CreateUser",
    )
    assert (
        record.phase == "catch" and record.line == 11
    )  # the decorator line, as inspect reports it
    assert audit.file == f"{directory.parent.name}/users/hooks.py"
    assert [h.id for h in loaded.hooks_for("CreateUser")] == ["audit", "record", "normalise"]
    assert [h.id for h in loaded.hooks_for("FetchUser")] == ["audit", "record"]


@pytest.mark.parametrize(
    "target",
    [
        "{pkg}.users.hooks:missing",
        "{pkg}.users.nohooks:audit",
        "{pkg}.users.hooks:Recorder.nothing",
    ],
)
def test_an_unknown_hook_target_names_the_hook_and_target(
    packages: PackageFactory, tmp_path: Path, target: str
) -> None:
    body = f'[[hooks]]\nid = "bad-hook"\nphase = "before"\ntarget = "{target}"\n'
    directory = make(packages, tmp_path, body)
    with pytest.raises(ManifestError) as info:
        load_module(directory)
    message = str(info.value)
    resolved_target = target.replace("{pkg}", directory.parent.name)
    assert message.startswith(
        f"{directory / 'module.toml'}: hooks[0].target: hook 'bad-hook' has target "
    )
    assert repr(resolved_target) in message and "cannot be resolved" in message


def test_a_hook_target_that_is_not_a_function_is_refused(
    packages: PackageFactory, tmp_path: Path
) -> None:
    body = '[[hooks]]\nid = "x"\nphase = "before"\ntarget = "{pkg}.users.hooks:not_callable"\n'
    with pytest.raises(ManifestError, match=r"hook 'x' has target .* which is not a function"):
        load_module(make(packages, tmp_path, body))


def test_a_hook_for_a_method_without_handler_is_refused(
    packages: PackageFactory, tmp_path: Path
) -> None:
    body = '[[hooks]]\nid = "x"\nphase = "before"\ntarget = "{pkg}.users.hooks:audit"\nmethod = "Ghost"\n'
    with pytest.raises(
        ManifestError,
        match=r"hooks\[0\]\.method: hook 'x' names method 'Ghost', which has no handler",
    ):
        load_module(make(packages, tmp_path, body))


def test_a_policy_for_a_method_that_does_not_exist_is_refused(
    packages: PackageFactory, tmp_path: Path
) -> None:
    directory = make(packages, tmp_path, "[methods.GetUser]\npublic = true\n")
    with pytest.raises(ManifestError) as info:
        load_module(directory)
    assert str(info.value) == (
        f"{directory / 'module.toml'}: methods.GetUser: there is no handler for 'GetUser' "
        "(handlers: CreateUser, DeleteUser, FetchUser)"
    )


def test_two_functions_for_one_method_are_refused_naming_both(
    packages: PackageFactory, tmp_path: Path
) -> None:
    handlers = (
        HANDLERS
        + """

@handler(name="CreateUser")
async def create_user_again(req: CreateUserRequest, lctx, gctx) -> User:
    return User(id=2, name=req.name)
"""
    )
    directory = make(packages, tmp_path, handlers=handlers)
    with pytest.raises(ManifestError) as info:
        load_module(directory)
    message = str(info.value)
    assert "two handlers for method 'CreateUser'" in message
    assert "create_user (" in message and "create_user_again (" in message
    assert f"{directory.parent.name}/users/handlers.py:6" in message


def test_a_marked_function_of_the_wrong_shape_fails_the_load(
    packages: PackageFactory, tmp_path: Path
) -> None:
    handlers = (
        HANDLERS
        + """

@handler
async def broken(req: CreateUserRequest, lctx) -> User:
    return User(id=2, name=req.name)
"""
    )
    with pytest.raises(
        HandlerShapeError, match=r"broken .* is not a handler: it takes 2 positional"
    ):
        load_module(make(packages, tmp_path, handlers=handlers))


def test_a_module_without_handlers_is_refused(packages: PackageFactory, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="defines no @handler functions"):
        load_module(make(packages, tmp_path, handlers="X = 1\n"))


def test_a_handlers_module_that_cannot_be_imported_names_the_key(
    packages: PackageFactory, tmp_path: Path
) -> None:
    directory = make(packages, tmp_path, handlers="import not_a_real_dependency_xyz\n")
    with pytest.raises(ManifestError) as info:
        load_module(directory)
    assert str(info.value).startswith(
        f"{directory / 'module.toml'}: module.handlers: cannot import "
    )
    assert "not_a_real_dependency_xyz" in str(info.value)


def test_discover_modules_lists_folders_with_a_manifest_sorted(tmp_path: Path) -> None:
    for name in ("orders", "users", "inventory"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "module.toml").write_text("")
    (tmp_path / "docs").mkdir()
    (tmp_path / "module.toml").write_text("")
    assert discover_modules(tmp_path) == [
        tmp_path / "inventory",
        tmp_path / "orders",
        tmp_path / "users",
    ]
    assert discover_modules(tmp_path / "missing") == []


def test_the_public_surface_is_a_sorted_all() -> None:
    exported = runtime.manifest.__all__
    # isort-style order, as ruff keeps it: CONSTANTS, then Classes, then functions
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
    assert all(hasattr(runtime.manifest, name) for name in exported)
    assert {
        "handler",
        "load_module",
        "CapabilitySet",
        "build_manifests",
        "check_registration",
    } <= set(exported)
    import runtime as top

    assert "handler" in top.__all__ and top.handler is runtime.manifest.handler
