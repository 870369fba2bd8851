"""Configuration: one frozen, validated :class:`Settings` per process.

Loaded by :func:`load_settings` from ``modrpc.toml`` (top-level keys), overridden by ``MODRPC_*``
environment variables (nested with ``__``) and by explicit keyword overrides. Every field carries
a description; unknown keys and wrong types raise :class:`ConfigError` naming the source and key.

    >>> settings = load_settings(gateway_port=0)
    >>> settings.auth.issuer
    'modrpc-dev'
"""

from runtime.config._load import (
    ConfigError,
    load_settings,
    setting_sources,
    settings_table,
    unknown_env,
)
from runtime.config._settings import (
    DEV_JWT_SECRET,
    ApiKeySettings,
    AuthSettings,
    LimitsSettings,
    ObservabilitySettings,
    PlaygroundSettings,
    RetentionSettings,
    SecretsSettings,
    Settings,
    TlsSettings,
    is_loopback,
)
from runtime.config._urls import mask_url

__all__ = [
    "DEV_JWT_SECRET",
    "ApiKeySettings",
    "AuthSettings",
    "ConfigError",
    "LimitsSettings",
    "ObservabilitySettings",
    "PlaygroundSettings",
    "RetentionSettings",
    "SecretsSettings",
    "Settings",
    "TlsSettings",
    "is_loopback",
    "load_settings",
    "mask_url",
    "setting_sources",
    "settings_table",
    "unknown_env",
]
