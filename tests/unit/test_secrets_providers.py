"""Secret providers: environment, a locked-down directory, and Vault's configuration path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.config import ConfigError, SecretsSettings
from runtime.errors import InternalError, Unavailable
from runtime.secrets import SecretsManager
from runtime.secrets._providers import (
    EnvProvider,
    FileProvider,
    VaultProvider,
    env_key,
    providers_from_settings,
)


def test_env_variable_name_is_prefix_plus_upper_cased_name() -> None:
    assert env_key("MODRPC_SECRET_", "smtp_password") == "MODRPC_SECRET_SMTP_PASSWORD"
    assert env_key("MODRPC_SECRET_", "db.main-pw") == "MODRPC_SECRET_DB_MAIN_PW"


async def test_env_provider_reads_its_mapping_and_says_none_when_absent() -> None:
    provider = EnvProvider("APP_", environ={"APP_TOKEN": "abc"})
    assert await provider.get("token") == "abc"
    assert await provider.get("other") is None


def _secret_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)
    return directory


def _secret_file(directory: Path, name: str, content: str, mode: int = 0o600) -> Path:
    path = directory / name
    path.write_text(content, encoding="utf-8")
    os.chmod(path, mode)
    return path


async def test_file_provider_reads_one_file_per_secret_without_trailing_newline(
    tmp_path: Path,
) -> None:
    directory = _secret_dir(tmp_path)
    _secret_file(directory, "db_password", "pa ss\n")
    _secret_file(directory, "two_lines", "a\nb\n\n")
    provider = FileProvider(directory)
    assert await provider.get("db_password") == "pa ss"
    assert await provider.get("two_lines") == "a\nb\n"
    assert await provider.get("missing") is None


async def test_file_provider_with_no_directory_has_no_secrets(tmp_path: Path) -> None:
    assert await FileProvider(tmp_path / "absent").get("anything") is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o601])
async def test_file_readable_by_group_or_others_is_refused_naming_file_and_mode(
    tmp_path: Path, mode: int
) -> None:
    directory = _secret_dir(tmp_path)
    path = _secret_file(directory, "api_key", "TOPSECRETVALUE", mode)
    with pytest.raises(InternalError) as caught:
        await FileProvider(directory).get("api_key")
    message = str(caught.value)
    assert str(path) in message
    assert oct(mode) in message
    assert "TOPSECRETVALUE" not in message


async def test_directory_open_to_group_or_others_is_refused(tmp_path: Path) -> None:
    directory = _secret_dir(tmp_path)
    _secret_file(directory, "api_key", "v")
    os.chmod(directory, 0o755)
    with pytest.raises(InternalError, match=rf"secret directory {directory} has mode 0o755"):
        await FileProvider(directory).get("api_key")


async def test_file_provider_through_the_manager_refuses_loose_files_too(tmp_path: Path) -> None:
    directory = _secret_dir(tmp_path)
    _secret_file(directory, "api_key", "v", 0o644)
    manager = SecretsManager([FileProvider(directory)], ttl=30)
    with pytest.raises(InternalError, match="0o644"):
        await manager.get("api_key")


def test_providers_follow_the_configured_order(tmp_path: Path) -> None:
    settings = SecretsSettings(providers=("file", "env"), file_dir=tmp_path, env_prefix="X_")
    providers = providers_from_settings(settings, environ={})
    assert [p.name for p in providers] == ["file", "env"]


def test_vault_without_its_token_variable_is_a_config_error_naming_the_variable() -> None:
    settings = SecretsSettings(
        providers=("vault",), vault_url="http://127.0.0.1:1", vault_token_env="MY_VAULT_TOKEN"
    )
    with pytest.raises(ConfigError, match=r"\$MY_VAULT_TOKEN"):
        providers_from_settings(settings, environ={})


async def test_unreachable_vault_is_unavailable_naming_the_secret_not_the_token() -> None:
    """No Vault server runs here, so this pins the configuration and error path only: hvac
    really connects to a closed port and the failure is translated at the edge."""
    settings = SecretsSettings(
        providers=("vault",), vault_url="http://127.0.0.1:1", vault_token_env="VT"
    )
    providers = providers_from_settings(settings, environ={"VT": "s.tokenvalue123"})
    assert isinstance(providers[0], VaultProvider)
    async with SecretsManager(providers, ttl=30) as manager:
        with pytest.raises(Unavailable) as caught:
            await manager.get("smtp_password")
    message = str(caught.value)
    assert "'smtp_password'" in message
    assert "vault" in message
    assert "s.tokenvalue123" not in message


async def test_closed_vault_provider_refuses_further_reads() -> None:
    provider = VaultProvider("http://127.0.0.1:1", "t")
    await provider.close()
    await provider.close()
    with pytest.raises(Unavailable, match="closed"):
        await provider.get("x")
