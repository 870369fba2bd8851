"""Loading settings: defaults, precedence, and errors that name the source and key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel

import runtime.config as config
from runtime.config import DEV_JWT_SECRET, ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MODRPC_* variables from the developer's shell, and no ./modrpc.toml from the repo."""
    for name in list(os.environ):
        if name.upper().startswith("MODRPC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path



def test_defaults_are_the_embedded_single_machine_setup() -> None:
    settings = load_settings()
    assert (settings.host, settings.gateway_port, settings.admin_port) == ("127.0.0.1", 50051, 9464)
    assert settings.modules_dir == Path("modules")
    assert settings.log_level == "INFO"
    assert settings.max_message_bytes == 4 * 1024 * 1024
    assert settings.store_url == "sqlite:///.modrpc/store.db"
    assert settings.fabric_url == "memory://"
    assert settings.ratelimit_url == "memory://"
    assert settings.ratelimit_failure_mode == "open"
    assert settings.ratelimit_max_keys == 100_000
    assert settings.drain_seconds == 10.0
    assert settings.auth.jwt_algorithms == ("HS256", "RS256", "ES256")
    assert settings.auth.jwt_secret is None  # the development secret applies only on loopback
    assert DEV_JWT_SECRET == "modrpc-dev-secret-change-me-in-production"
    assert settings.auth.max_token_lifetime == 86400.0
    assert settings.tls.dir == Path(".modrpc/tls") and settings.tls.dev_ca
    assert settings.tls.cert is None and settings.tls.key is None and settings.tls.client_ca is None
    assert (settings.auth.issuer, settings.auth.audience) == ("modrpc-dev", "modrpc")
    assert dict(settings.auth.api_keys) == {}
    assert settings.secrets.env_prefix == "MODRPC_SECRET_"
    assert settings.secrets.file_dir == Path(".modrpc/secrets")
    assert settings.secrets.ttl == 30.0
    assert settings.observability.audit_path == Path(".modrpc/audit.jsonl")
    assert settings.observability.audit_sink == "file"
    assert settings.observability.otlp_endpoint is None


def test_modrpc_toml_in_the_working_directory_is_read_when_no_path_is_given(tmp_path: Path) -> None:
    write(tmp_path / "modrpc.toml", 'gateway_port = 6000\n[auth]\nissuer = "corp"\n')
    settings = load_settings()
    assert settings.gateway_port == 6000
    assert settings.auth.issuer == "corp"
    assert settings.auth.audience == "modrpc"


def test_environment_overrides_the_file_and_keyword_overrides_beat_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path / "custom.toml",
        'gateway_port = 6000\nhost = "0.0.0.0"\n[auth]\nissuer = "file"\naudience = "file-aud"\n',
    )
    monkeypatch.setenv("MODRPC_GATEWAY_PORT", "7000")
    monkeypatch.setenv("MODRPC_AUTH__ISSUER", "env")
    settings = load_settings(path, host="10.0.0.1")
    assert settings.gateway_port == 7000
    assert settings.host == "10.0.0.1"
    assert settings.auth.issuer == "env"
    assert settings.auth.audience == "file-aud"  # nested keys merge across sources


def test_lists_in_the_environment_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODRPC_AUTH__JWT_ALGORITHMS", '["RS256"]')
    assert load_settings().auth.jwt_algorithms == ("RS256",)


def test_unrelated_modrpc_variables_are_not_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODRPC_SECRET_DB_PASSWORD", "x")
    monkeypatch.setenv("MODRPC_TEST_POSTGRES_URL", "postgresql://elsewhere")
    assert load_settings().gateway_port == 50051


def test_wrong_type_in_the_file_names_file_and_dotted_key(tmp_path: Path) -> None:
    write(tmp_path / "modrpc.toml", "[auth]\nissuer = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == "modrpc.toml: auth.issuer: Input should be a valid string"


def test_unknown_keys_in_the_file_are_refused_by_name(tmp_path: Path) -> None:
    path = write(tmp_path / "x.toml", "gatway_port = 1\n[auth]\nisuer = 'x'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert f"{path}: gatway_port: Extra inputs are not permitted" in message
    assert f"{path}: auth.isuer: Extra inputs are not permitted" in message


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODRPC_GATEWAY_PORT", "fifty")
    with pytest.raises(ConfigError, match=r"^MODRPC_GATEWAY_PORT: Input should be a valid integer"):
        load_settings()


def test_unknown_nested_environment_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODRPC_AUTH__ISUER", "x")
    with pytest.raises(ConfigError, match=r"^MODRPC_AUTH__ISUER: Extra inputs are not permitted"):
        load_settings()


def test_malformed_json_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODRPC_AUTH__JWT_ALGORITHMS", "[HS256")
    with pytest.raises(ConfigError, match=r"^MODRPC_AUTH__JWT_ALGORITHMS: not valid JSON"):
        load_settings()


def test_bad_override_is_reported_as_an_override() -> None:
    with pytest.raises(ConfigError, match=r"^override gateway_port: Input should be less than"):
        load_settings(gateway_port=70000)


def test_missing_explicit_file_and_invalid_toml_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: configuration file not found"):
        load_settings(tmp_path / "nope.toml")
    broken = write(tmp_path / "broken.toml", "gateway_port = [\n")
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML"):
        load_settings(broken)


def test_api_keys_hold_only_hashes(tmp_path: Path) -> None:
    digest = "ab" * 32
    good = write(
        tmp_path / "good.toml",
        f'[auth.api_keys.ci]\nhash = "sha256:{digest}"\nsubject = "ci-bot"\nroles = ["deploy"]\n',
    )
    key = load_settings(good).auth.api_keys["ci"]
    assert (key.hash, key.subject, key.roles) == (f"sha256:{digest}", "ci-bot", ("deploy",))
    plain = write(tmp_path / "plain.toml", '[auth.api_keys.ci]\nhash = "hunter2"\nsubject = "ci"\n')
    with pytest.raises(ConfigError, match=r"plain.toml: auth.api_keys.ci.hash: must be 'sha256:'"):
        load_settings(plain)


def test_alg_none_cannot_be_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODRPC_AUTH__JWT_ALGORITHMS", '["none"]')
    with pytest.raises(ConfigError, match=r"auth.jwt_algorithms\[0\]"):
        load_settings()


def test_backend_urls_must_use_a_known_scheme() -> None:
    with pytest.raises(
        ConfigError, match=r"override ratelimit_url: unsupported URL scheme mysql://"
    ):
        load_settings(ratelimit_url="mysql://x")
    assert load_settings(ratelimit_url="redis://127.0.0.1:6379/0").ratelimit_url.startswith("redis")
    assert load_settings(store_url="postgresql://db/test").store_url == "postgresql://db/test"
    assert load_settings(fabric_url="nats://127.0.0.1:4222").fabric_url == "nats://127.0.0.1:4222"


def test_vault_provider_needs_a_url() -> None:
    with pytest.raises(ConfigError, match=r"override secrets: providers lists 'vault'"):
        load_settings(secrets={"providers": ["env", "vault"]})
    settings = load_settings(secrets={"providers": ["vault"], "vault_url": "http://vault:8200"})
    assert settings.secrets.providers == ("vault",)


def test_log_level_is_case_insensitive() -> None:
    assert load_settings(log_level="debug").log_level == "DEBUG"
    with pytest.raises(ConfigError, match="log_level"):
        load_settings(log_level="chatty")


def test_dev_secret_is_kept_out_of_repr() -> None:
    assert DEV_JWT_SECRET not in repr(load_settings())


def test_settings_serialise_to_plain_json() -> None:
    digest = "cd" * 32
    settings = load_settings(
        auth={"api_keys": {"k": {"hash": f"sha256:{digest}", "subject": "s", "roles": ["r"]}}}
    )
    dumped = settings.model_dump(mode="json")
    assert dumped["auth"]["api_keys"] == {
        "k": {"hash": f"sha256:{digest}", "subject": "s", "roles": ["r"]}
    }
    assert dumped["gateway_port"] == 50051


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    found = [model]
    for info in model.model_fields.values():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(_models(annotation))
    return found


def test_every_field_has_a_description() -> None:
    models: list[type[BaseModel]] = [*_models(Settings), config.ApiKeySettings]
    assert {m.__name__ for m in models} >= {
        "Settings",
        "AuthSettings",
        "SecretsSettings",
        "ObservabilitySettings",
        "PlaygroundSettings",
        "ApiKeySettings",
        "LimitsSettings",
        "RetentionSettings",
    }
    undescribed = [
        f"{model.__name__}.{name}"
        for model in models
        for name, info in model.model_fields.items()
        if not (info.description and info.description.strip())
    ]
    assert undescribed == []


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_config_names_the_variable_that_set_each_setting_of_a_section(monkeypatch: pytest.MonkeyPatch) -> None:
    """One nested variable sets one setting; its siblings keep their own source (``modrpc config``
    used to fail on any nested variable), and a section's JSON variable names what it holds."""
    from runtime.config._load import setting_sources

    monkeypatch.setenv("MODRPC_LIMITS__IDLE_TIMEOUT", "15")
    sources = {key: source for key, _, source in setting_sources()}
    assert sources["limits.idle_timeout"] == "MODRPC_LIMITS__IDLE_TIMEOUT"
    assert sources["limits.max_connections"] == "default"
    monkeypatch.delenv("MODRPC_LIMITS__IDLE_TIMEOUT")
    monkeypatch.setenv("MODRPC_LIMITS", '{"max_connections": 50}')
    sources = {key: source for key, _, source in setting_sources()}
    assert sources["limits.max_connections"] == "MODRPC_LIMITS"
    assert sources["limits.idle_timeout"] == "default"
