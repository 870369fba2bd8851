"""The secrets manager: capability check, provider order, errors, and the Secret value type."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable

import pytest

from runtime.config import SecretsSettings
from runtime.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from runtime.secrets import Secret, SecretsManager, open_secrets
from runtime.secrets._providers import EnvProvider


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BrokenProvider:
    """A provider whose backend fails with a foreign error (its message holds a value)."""

    name = "broken"

    async def get(self, name: str) -> str | None:
        raise RuntimeError("backend said: value=hunter2")


def only(*declared: str) -> Callable[[str], None]:
    def allowed(name: str) -> None:
        if name not in declared:
            raise PermissionDenied(f"module 'orders' did not declare capability secrets=[{name!r}]")

    return allowed


def test_secret_never_shows_its_value() -> None:
    secret = Secret("db_password", "hunter2")
    percent = "%s" % (secret,)  # noqa: UP031 - %-formatting is what logging does
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", percent, f"{secret:>40}"]
    assert all("hunter2" not in text for text in shown)
    assert repr(secret) == "Secret('db_password', '***')"
    assert secret.reveal() == "hunter2"
    assert secret.name == "db_password"


def test_secret_cannot_be_pickled_or_json_encoded() -> None:
    secret = Secret("k", "hunter2")
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        json.dumps({"k": secret})


def test_secrets_compare_by_name_and_value() -> None:
    assert Secret("a", "1") == Secret("a", "1")
    assert Secret("a", "1") != Secret("a", "2")
    assert Secret("a", "1") != Secret("b", "1")


async def test_first_provider_that_has_the_secret_wins() -> None:
    first = EnvProvider("A_", environ={"A_TOKEN": "from-a"})
    second = EnvProvider("B_", environ={"B_TOKEN": "from-b", "B_OTHER": "other-b"})
    manager = SecretsManager([first, second], ttl=30)
    assert (await manager.get("token")).reveal() == "from-a"
    assert (await manager.get("other")).reveal() == "other-b"


async def test_missing_everywhere_is_not_found_naming_secret_and_providers() -> None:
    manager = SecretsManager([EnvProvider(environ={})], ttl=30)
    with pytest.raises(
        NotFound, match=r"secret 'smtp_password' is not set in any provider \(env\)"
    ):
        await manager.get("smtp_password")


async def test_undeclared_secret_is_denied_before_any_provider_is_asked() -> None:
    environ = {"MODRPC_SECRET_PAYMENTS_KEY": "pk"}
    manager = SecretsManager([EnvProvider(environ=environ)], ttl=30, allowed=only("smtp_password"))
    with pytest.raises(PermissionDenied, match="payments_key"):
        await manager.get("payments_key")
    assert manager.redactor.values == frozenset()


async def test_scoped_views_share_the_cache_but_check_their_own_capabilities() -> None:
    environ = {"MODRPC_SECRET_SHARED": "v1"}
    clock = FakeClock()
    root = SecretsManager([EnvProvider(environ=environ)], ttl=10, clock=clock)
    orders = root.scoped(only("shared"))
    users = root.scoped(only())
    assert (await orders.get("shared")).reveal() == "v1"
    environ["MODRPC_SECRET_SHARED"] = "v2"
    assert (await root.get("shared")).reveal() == "v1"  # cached by the orders view
    with pytest.raises(PermissionDenied):
        await users.get("shared")
    assert "v1" in root.redactor.values


async def test_unreachable_provider_is_unavailable_without_the_value() -> None:
    manager = SecretsManager([BrokenProvider()], ttl=30)
    with pytest.raises(Unavailable) as caught:
        await manager.get("api_key")
    assert "'api_key'" in str(caught.value)
    assert "'broken'" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a/b", ".hidden", "x" * 200, "sp ace"])
async def test_bad_secret_names_are_refused(name: str) -> None:
    manager = SecretsManager([EnvProvider(environ={})], ttl=30)
    with pytest.raises(InvalidArgument, match="bad secret name"):
        await manager.get(name)


async def test_zero_ttl_always_asks_the_providers() -> None:
    environ = {"MODRPC_SECRET_K": "1"}
    manager = SecretsManager([EnvProvider(environ=environ)], ttl=0)
    assert (await manager.get("k")).reveal() == "1"
    environ["MODRPC_SECRET_K"] = "2"
    assert (await manager.get("k")).reveal() == "2"


async def test_invalidate_forces_a_fresh_read() -> None:
    environ = {"MODRPC_SECRET_K": "1"}
    manager = SecretsManager([EnvProvider(environ=environ)], ttl=3600)
    await manager.get("k")
    environ["MODRPC_SECRET_K"] = "2"
    manager.invalidate("k")
    assert (await manager.get("k")).reveal() == "2"


async def test_closed_manager_refuses_reads_and_close_is_idempotent() -> None:
    manager = SecretsManager([EnvProvider(environ={"MODRPC_SECRET_K": "1"})], ttl=30)
    await manager.close()
    await manager.close()
    with pytest.raises(Unavailable, match="closed"):
        await manager.get("k")


async def test_open_secrets_builds_providers_from_settings(tmp_path: object) -> None:
    settings = SecretsSettings(providers=("env",), env_prefix="APP_SECRET_", ttl=5)
    manager = open_secrets(settings, environ={"APP_SECRET_TOKEN": "t"})
    assert [p.name for p in manager.providers] == ["env"]
    assert (await manager.get("token")).reveal() == "t"
