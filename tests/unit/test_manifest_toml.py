"""module.toml: what validates, what is refused, and that every error names the file and key."""

from __future__ import annotations

from pathlib import Path

import limits
import pytest

from runtime.errors import ManifestError
from runtime.manifest import MethodPolicy, load_manifest
from runtime.manifest._toml import DEFAULT_TIMEOUT, ModuleManifest, parse_manifest
from runtime.versions import is_version_id

SOURCE = "modules/users/module.toml"

FULL = """
[module]
name = "users"
version = "1.2.0-rc.1+build.5"
description = "Users and their profiles."
warm_pool = 2

[capabilities]
modules = ["users", "inventory"]
publish = ["users.created", "users.*.deleted", "audit.>"]
subscribe = ["orders.>"]
secrets = ["smtp_password", "db/url"]
network = ["SMTP.Example.com:587", "[::1]:8080", "10.0.0.1:443"]

[versions]
stable = "2025-06-01"
latest = "tsv:1750000000-users-3"
"v1.2.0" = "2025-06-01"

[methods.CreateUser]
public = false
roles = ["users:write"]
rate_limit = "100/second"
timeout = 2
idempotent = true
retry = { attempts = 4, initial_backoff = 0.1, max_backoff = 2.0 }
snapshot = true

[methods.GetUser]
public = true

[[hooks]]
id = "audit-name"
phase = "before"
target = "modules.users.hooks:normalise_email"
method = "CreateUser"
timeout = 1.0
retries = 2

[[hooks]]
id = "log"
phase = "catch"
target = "modules.users.hooks:Log.record"
"""


def minimal(body: str = "", *, head: str = "") -> str:
    return f'[module]\nname = "users"\nversion = "1.0.0"\n{head}\n{body}'


def error_of(text: str) -> str:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, source=SOURCE)
    return str(info.value)


def test_a_full_manifest_parses_into_typed_frozen_values() -> None:
    m = parse_manifest(FULL, source=SOURCE)
    assert m.module.name == "users" and m.module.warm_pool == 2
    assert m.module.handlers is None  # the handlers.py next to module.toml
    assert m.capabilities.modules == ("users", "inventory")
    assert m.capabilities.network == ("smtp.example.com:587", "[::1]:8080", "10.0.0.1:443")
    assert m.versions == {
        "stable": "2025-06-01",
        "latest": "tsv:1750000000-users-3",
        "v1.2.0": "2025-06-01",
    }
    create = m.methods["CreateUser"]
    assert create.timeout == 2.0 and create.retry.attempts == 4 and create.rate() == (100, 1)
    assert [h.id for h in m.hooks] == ["audit-name", "log"]
    assert [h.level for h in m.hooks] == ["handler", "module"]
    with pytest.raises(ValueError):
        m.module.name = "other"  # type: ignore[misc]


def test_a_method_without_a_policy_gets_every_default() -> None:
    m = parse_manifest(minimal(), source=SOURCE)
    policy = m.policy("Anything")
    assert policy == MethodPolicy()
    assert (policy.public, policy.roles, policy.rate_limit, policy.timeout) == (
        False,
        (),
        None,
        DEFAULT_TIMEOUT,
    )
    assert m.module.handlers is None  # the handlers.py next to module.toml
    assert m.module.warm_pool == 1


def test_wrong_type_names_file_and_dotted_key() -> None:
    msg = error_of(minimal('[methods.CreateUser]\ntimeout = "2"\n'))
    assert msg == f"{SOURCE}: methods.CreateUser.timeout: Input should be a valid number"


def test_strings_are_not_coerced_into_numbers_or_booleans() -> None:
    msg = error_of(minimal('[methods.CreateUser]\npublic = "yes"\n', head='warm_pool = "1"'))
    assert f"{SOURCE}: module.warm_pool: Input should be a valid integer" in msg
    assert f"{SOURCE}: methods.CreateUser.public: Input should be a valid boolean" in msg


def test_unknown_key_is_named_with_the_allowed_keys() -> None:
    msg = error_of(minimal("[capabilities]\nfilesystem = ['/tmp']\n"))
    assert f"{SOURCE}: capabilities.filesystem: unknown key 'filesystem'" in msg
    assert "allowed keys are modules, network, publish, secrets, subscribe" in msg


def test_unknown_keys_in_nested_tables_and_arrays_of_tables_are_named() -> None:
    text = minimal(
        "[methods.CreateUser]\nretry = { attempts = 2, jitter = true }\n"
        "[[hooks]]\nid = 'a'\nphase = 'before'\ntarget = 'm:f'\nwhen = 'always'\n"
    )
    msg = error_of(text)
    assert f"{SOURCE}: methods.CreateUser.retry.jitter: unknown key 'jitter'" in msg
    assert f"{SOURCE}: hooks[0].when: unknown key 'when'" in msg


def test_unknown_top_level_table_is_refused() -> None:
    msg = error_of(minimal("[capabilites]\nmodules = []\n"))
    assert f"{SOURCE}: capabilites: unknown key 'capabilites'" in msg


@pytest.mark.parametrize("version", ["1.2", "01.2.3", "v1.2.3", "1.2.3-", "1.2.3.4", ""])
def test_bad_semver_is_refused(version: str) -> None:
    msg = error_of(f'[module]\nname = "users"\nversion = "{version}"\n')
    assert msg.startswith(f"{SOURCE}: module.version: ")
    assert "not a semantic version" in msg


@pytest.mark.parametrize(
    "rate", ["100", "100/week", "0/second", "-1/second", "ten/minute", "100 per second"]
)
def test_bad_rate_limit_is_refused(rate: str) -> None:
    msg = error_of(minimal(f'[methods.CreateUser]\nrate_limit = "{rate}"\n'))
    assert msg.startswith(f"{SOURCE}: methods.CreateUser.rate_limit: ")


@pytest.mark.parametrize("rate", ["1/second", "100/minute", "5000/hour", "7/day"])
def test_accepted_rate_limits_parse_in_the_limits_library(rate: str) -> None:
    policy = parse_manifest(
        minimal(f'[methods.A]\nrate_limit = "{rate}"\n'), source=SOURCE
    ).methods["A"]
    item = limits.parse(rate)
    count, seconds = policy.rate() or (0, 0)
    assert item.amount == count and item.get_expiry() == seconds


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("[[hooks]]\nid = 'a'\nphase = 'during'\ntarget = 'm:f'\n", "hooks[0].phase"),
        ("[[hooks]]\nid = 'a'\nphase = 'before'\ntarget = 'm.f'\n", "hooks[0].target"),
        (
            "[[hooks]]\nid = 'a'\nphase = 'before'\ntarget = 'm:f'\nmethod = 'create_user'\n",
            "hooks[0].method",
        ),
        (
            "[[hooks]]\nid = 'a'\nphase = 'before'\ntarget = 'm:f'\nretries = -1\n",
            "hooks[0].retries",
        ),
        (
            "[[hooks]]\nid = 'a'\nphase = 'before'\ntarget = 'm:f'\ntimeout = 0\n",
            "hooks[0].timeout",
        ),
        ("[methods.A]\ntimeout = nan\n", "methods.A.timeout"),
        ("[methods.A]\nroles = ['has space']\n", "methods.A.roles[0]"),
        (
            "[methods.A]\nretry = { initial_backoff = 2.0, max_backoff = 1.0 }\n",
            "methods.A.retry.max_backoff",
        ),
        ("[methods.create_user]\n", "methods.create_user"),
        ("[capabilities]\nmodules = ['Payments']\n", "capabilities.modules[0]"),
        ("[capabilities]\npublish = ['users..created']\n", "capabilities.publish[0]"),
        ("[capabilities]\nsubscribe = ['users.>.x']\n", "capabilities.subscribe[0]"),
        ("[capabilities]\nsubscribe = ['users.cr*']\n", "capabilities.subscribe[0]"),
        ("[capabilities]\nnetwork = ['smtp.example.com']\n", "capabilities.network[0]"),
        ("[capabilities]\nnetwork = ['smtp.example.com:70000']\n", "capabilities.network[0]"),
        ("[capabilities]\nnetwork = ['bad_host!:80']\n", "capabilities.network[0]"),
        ("[capabilities]\nsecrets = 'smtp'\n", "capabilities.secrets"),
        ("[versions]\nstable = '2025-02-30'\n", "versions.stable"),
        ("[versions]\nstable = 'tsv:abc-users-1'\n", "versions.stable"),
    ],
)
def test_each_bad_value_is_reported_under_its_key(body: str, key: str) -> None:
    msg = error_of(minimal(body))
    assert msg.startswith(f"{SOURCE}: {key}: "), msg


def test_every_error_is_reported_not_just_the_first() -> None:
    msg = error_of(minimal("[methods.A]\ntimeout = 'x'\npublic = 1\n[capabilities]\nextra = 1\n"))
    lines = msg.splitlines()
    assert len(lines) == 3 and all(line.startswith(f"{SOURCE}: ") for line in lines)


def test_duplicate_hook_ids_are_refused() -> None:
    hook = "[[hooks]]\nid = 'same'\nphase = 'before'\ntarget = 'm:f'\n"
    msg = error_of(minimal(hook + hook))
    assert msg == f"{SOURCE}: hooks: hook id 'same' is declared twice"


def test_a_tsv_version_id_of_another_module_is_refused() -> None:
    msg = error_of(minimal("[versions]\nstable = 'tsv:1750000000-orders-1'\n"))
    assert "versions.stable" in msg and "belongs to module 'orders'" in msg


def test_toml_syntax_error_names_file_and_line() -> None:
    msg = error_of('[module]\nname = "users"\nversion = \n')
    assert msg.startswith(f"{SOURCE}: invalid TOML: ")
    assert "line 3" in msg


def test_load_manifest_requires_the_name_to_equal_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "accounts"
    folder.mkdir()
    (folder / "module.toml").write_text(minimal())
    with pytest.raises(ManifestError) as info:
        load_manifest(folder / "module.toml")
    assert (
        str(info.value)
        == f"{folder / 'module.toml'}: module.name: 'users' must equal the folder name 'accounts'"
    )


def test_load_manifest_reads_a_file_and_names_it_in_errors(tmp_path: Path) -> None:
    folder = tmp_path / "users"
    folder.mkdir()
    path = folder / "module.toml"
    path.write_text(minimal("[methods.A]\ntimeout = 'slow'\n"))
    with pytest.raises(ManifestError, match=rf"^{path}: methods\.A\.timeout: "):
        load_manifest(path)
    path.write_text(minimal())
    assert isinstance(load_manifest(path), ModuleManifest)


def test_a_missing_manifest_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read the module manifest"):
        load_manifest(tmp_path / "users" / "module.toml")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2025-06-01", True),
        ("2024-02-29", True),
        ("2025-02-29", False),
        ("2025-6-1", False),
        ("tsv:1750000000-users-1", True),
        ("tsv:1750000000-order_items-12", True),
        ("tsv:-users-1", False),
        ("stable", False),
    ],
)
def test_version_ids_are_dates_or_tsv(value: str, ok: bool) -> None:
    assert is_version_id(value) is ok
