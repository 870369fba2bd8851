"""The settings model: every knob of a modrpc process, frozen and validated.

Nothing here reads files or the environment; :func:`runtime.config.load_settings` does that. The
models are frozen all the way down: sequences are tuples and mappings are read-only
``MappingProxyType`` views, so a ``Settings`` handed to a module through ``gctx.config`` cannot
be changed by anyone (SPEC §3, Property 32).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    WrapSerializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEV_JWT_SECRET",
    "ApiKeySettings",
    "AuthSettings",
    "ObservabilitySettings",
    "SecretsSettings",
    "Settings",
    "TlsSettings",
]

DEV_JWT_SECRET = "modrpc-dev-secret-change-me-in-production"
"""The HS256 secret of the development config; ``modrpc token`` signs with it. It is in force
only while no other JWT key is configured and the gateway binds a loopback address; a gateway
binding any other address with it refuses to start. Set ``MODRPC_AUTH__JWT_SECRET`` (or RS256/ES256
keys) for anything real."""

_K = TypeVar("_K")
_V = TypeVar("_V")


def _freeze_mapping(value: Mapping[_K, _V]) -> Mapping[_K, _V]:
    return MappingProxyType(dict(value))


def _serialize_mapping(value: Mapping[Any, Any], handler: SerializerFunctionWrapHandler) -> Any:
    # pydantic's dict serializer does not accept a mappingproxy; hand it a plain dict copy.
    return handler(dict(value))


FrozenMap = Annotated[
    Mapping[_K, _V],
    AfterValidator(_freeze_mapping),
    WrapSerializer(_serialize_mapping),
]
"""A mapping that is read-only after validation (a ``MappingProxyType`` over a private dict)."""


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
]
JwtAlgorithm = Literal["HS256", "RS256", "ES256"]
SecretProviderName = Literal["env", "file", "vault"]

_API_KEY_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_URL_SCHEMES = {
    "store_url": ("sqlite", "postgresql", "postgres"),
    "fabric_url": ("memory", "nats", "tls", "hub"),
    "ratelimit_url": ("memory", "redis", "rediss"),
}

_FROZEN = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class ApiKeySettings(BaseModel):
    """One API key the ingress accepts in ``x-api-key``. Only its hash is ever stored."""

    model_config = _FROZEN

    hash: str = Field(
        description=(
            "'sha256:' followed by the lower-case hex SHA-256 of the key. The key itself is never "
            "written to config, so a leaked config file does not leak credentials."
        ),
    )
    subject: str = Field(
        min_length=1, description="The principal's subject for calls made with this key."
    )
    roles: tuple[str, ...] = Field(
        default=(), description="Roles granted to callers using this key."
    )

    @field_validator("hash")
    @classmethod
    def _check_hash(cls, value: str) -> str:
        if not _API_KEY_HASH.match(value):
            raise ValueError(
                "must be 'sha256:' followed by 64 lower-case hex digits, not the key itself"
            )
        return value


class AuthSettings(BaseModel):
    """How the ingress authenticates callers (SPEC §5)."""

    model_config = _FROZEN

    jwt_algorithms: tuple[JwtAlgorithm, ...] = Field(
        default=("HS256", "RS256", "ES256"),
        min_length=1,
        description="JWT signature algorithms accepted. 'none' is never accepted, whatever is listed.",
    )
    jwt_secret: str | None = Field(
        default=None,
        min_length=1,
        repr=False,
        description=(
            "Shared secret for HS256 tokens. Unset: the documented development secret, but only "
            "while no RS256/ES256 key is configured and the gateway binds a loopback address "
            "(with keys configured, HS256 is then off)."
        ),
    )
    jwt_public_keys: tuple[Path, ...] = Field(
        default=(), description="PEM files with public keys that verify RS256/ES256 tokens."
    )
    jwks_path: Path | None = Field(
        default=None, description="A JWKS JSON file with further verification keys (optional)."
    )
    issuer: str = Field(default="modrpc-dev", description="Required 'iss' claim.")
    audience: str = Field(default="modrpc", description="Required 'aud' claim.")
    api_keys: FrozenMap[str, ApiKeySettings] = Field(
        default_factory=dict,
        description="API keys by key id; each entry holds the key's hash, subject and roles.",
    )
    leeway: float = Field(
        default=0.0,
        ge=0.0,
        description="Seconds of clock skew tolerated when checking 'exp' and 'nbf'.",
    )
    max_token_lifetime: float = Field(
        default=86400.0,
        gt=0.0,
        description=(
            "Longest lifetime, in seconds, of a token the gateway accepts: one whose 'exp' is "
            "further than this from its 'iat' (or from now) is refused."
        ),
    )


class SecretsSettings(BaseModel):
    """Where ``gctx.secrets`` looks for secret values (SPEC §6)."""

    model_config = _FROZEN

    providers: tuple[SecretProviderName, ...] = Field(
        default=("env", "file"),
        description="Providers asked in order; the first that has the secret wins.",
    )
    env_prefix: str = Field(
        default="MODRPC_SECRET_",
        description="The env provider reads secret NAME from <env_prefix><NAME upper-cased>.",
    )
    file_dir: Path = Field(
        default=Path(".modrpc/secrets"),
        description=(
            "The file provider reads secret NAME from <file_dir>/<NAME>; the directory and files "
            "must not be accessible to group or others."
        ),
    )
    vault_url: str | None = Field(
        default=None,
        description="Vault server address, e.g. https://vault:8200 (vault provider only).",
    )
    vault_token_env: str = Field(
        default="VAULT_TOKEN",
        description="Name of the environment variable holding the Vault token (never the token itself).",
    )
    vault_mount: str = Field(default="secret", description="Mount point of the Vault KV v2 engine.")
    vault_path_prefix: str = Field(
        default="modrpc",
        description="Path inside the mount under which secrets live: <prefix>/<NAME>, field 'value'.",
    )
    ttl: float = Field(
        default=30.0,
        ge=0.0,
        description="Seconds a fetched value is served from cache before it is fetched again.",
    )

    @model_validator(mode="after")
    def _vault_needs_url(self) -> SecretsSettings:
        if "vault" in self.providers and not self.vault_url:
            raise ValueError("providers lists 'vault' but vault_url is not set")
        return self


class TlsSettings(BaseModel):
    """TLS at the gateway's edge, and the mutual TLS between runtime processes."""

    model_config = _FROZEN

    cert: Path | None = Field(
        default=None,
        description=(
            "PEM certificate (chain) the gateway serves TLS with; with `key`, callers must use TLS. "
            "Re-read when the file changes."
        ),
    )
    key: Path | None = Field(default=None, description="The PEM private key of `cert`.")
    client_ca: Path | None = Field(
        default=None,
        description=(
            "PEM CA certificate(s): when set, the gateway requires a client certificate issued by "
            "it on every connection, and a call without a token or API key runs as the "
            "certificate's subject."
        ),
    )
    client_roles: FrozenMap[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description=(
            "Roles of the principals that client certificates name, by subject (the certificate's "
            "common name), at the gateway's edge and for calls made straight to a worker."
        ),
    )
    dir: Path = Field(
        default=Path(".modrpc/tls"),
        description=(
            "The internal mutual TLS folder: the deployment CA's certificate (ca.crt) and this "
            "host's identities (gateway.crt/.key, module-<name>.crt/.key, hub.crt/.key)."
        ),
    )
    dev_ca: bool = Field(
        default=True,
        description=(
            "Create a development CA in `dir` when it has none, and issue missing identities "
            "from it. Set false in production: a missing certificate is then an error."
        ),
    )

    @model_validator(mode="after")
    def _pairs(self) -> TlsSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key go together: set both or neither")
        if self.client_ca is not None and self.cert is None:
            raise ValueError("tls.client_ca needs tls.cert and tls.key: client certificates need TLS")
        return self


class ObservabilitySettings(BaseModel):
    """Traces, metrics, logs and the audit trail (SPEC §6)."""

    model_config = _FROZEN

    service_name: str = Field(
        default="modrpc", min_length=1, description="OpenTelemetry service.name."
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description=(
            "OTLP/gRPC endpoint for traces. Export happens only when set, and needs the "
            "'opentelemetry-exporter-otlp' package installed."
        ),
    )
    audit_sink: Literal["file", "store"] = Field(
        default="file",
        description="Where audit records go: an append-only JSON-lines file, or the manifest store.",
    )
    audit_path: Path = Field(
        default=Path(".modrpc/audit.jsonl"), description="The audit file when audit_sink is 'file'."
    )
    audit_fsync: bool = Field(
        default=False,
        description="fsync the audit file after every record: durable across power loss, but slower.",
    )


class Settings(BaseSettings):
    """Everything a modrpc process is configured with.

    Load it with :func:`runtime.config.load_settings`; field names are the keys of ``modrpc.toml``
    and, upper-cased behind ``MODRPC_`` (nested with ``__``), the environment variables.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        validate_default=True,
        env_prefix="MODRPC_",
        env_nested_delimiter="__",
        case_sensitive=False,
    )

    host: str = Field(
        default="127.0.0.1", min_length=1, description="Interface the gateway and workers bind to."
    )
    gateway_port: int = Field(
        default=50051, ge=0, le=65535, description="gRPC port of the gateway (0 = any free port)."
    )
    admin_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="HTTP port serving Prometheus /metrics and /healthz; 0 disables the admin server.",
    )
    modules_dir: Path = Field(
        default=Path("modules"), description="Folder holding one package per module."
    )
    log_level: LogLevel = Field(default="INFO", description="Root log level (case-insensitive).")
    max_message_bytes: int = Field(
        default=4 * 1024 * 1024,
        gt=0,
        description="Largest gRPC message accepted or sent; bigger ones get RESOURCE_EXHAUSTED.",
    )
    store_url: str = Field(
        default="sqlite:///.modrpc/store.db",
        description="Manifest store: sqlite:///path (embedded) or postgresql://... (distributed).",
    )
    fabric_url: str = Field(
        default="memory://",
        description="Queue fabric: memory:// (embedded) or nats://host:port (JetStream).",
    )
    ratelimit_url: str = Field(
        default="memory://",
        description="Rate-limit counters: memory:// (per process) or redis://host:port/db (shared by gateways).",
    )
    ratelimit_failure_mode: Literal["open", "closed"] = Field(
        default="open",
        description="When Redis cannot be reached: 'open' lets calls through, 'closed' refuses them.",
    )
    ratelimit_max_keys: int = Field(
        default=100_000,
        gt=0,
        description="Most rate-limit keys kept in memory; the least recently used are evicted beyond it.",
    )
    lane: bool = Field(
        default=True,
        description=(
            "Workers also listen on a lane port: a framed transport the gateway and other workers "
            "use for their own calls, far cheaper than a gRPC hop. false: gRPC only."
        ),
    )
    drain_seconds: float = Field(
        default=10.0,
        ge=0.0,
        description="On shutdown, how long calls in flight may take to finish.",
    )
    worker_restart_backoff: float = Field(
        default=0.5,
        gt=0.0,
        description="Delay before restarting a crashed worker; doubles per crash.",
    )
    worker_restart_backoff_max: float = Field(
        default=30.0, gt=0.0, description="Upper bound of the worker restart delay."
    )
    auth: AuthSettings = Field(default_factory=AuthSettings, description="Caller authentication.")
    tls: TlsSettings = Field(
        default_factory=TlsSettings, description="Edge TLS and internal mutual TLS."
    )
    secrets: SecretsSettings = Field(
        default_factory=SecretsSettings, description="Secret providers."
    )
    observability: ObservabilitySettings = Field(
        default_factory=ObservabilitySettings, description="Tracing, metrics, logs and audit."
    )

    @field_validator("store_url", "fabric_url", "ratelimit_url")
    @classmethod
    def _check_scheme(cls, value: str, info: ValidationInfo) -> str:
        allowed = _URL_SCHEMES[info.field_name or ""]
        scheme = urlsplit(value).scheme
        if scheme not in allowed:
            names = ", ".join(f"{s}://" for s in allowed)
            raise ValueError(
                f"unsupported URL scheme {scheme + '://' if scheme else '(none)'}; expected one of {names}"
            )
        return value

    @model_validator(mode="after")
    def _backoff_bounds(self) -> Settings:
        if self.worker_restart_backoff > self.worker_restart_backoff_max:
            raise ValueError("worker_restart_backoff must not exceed worker_restart_backoff_max")
        return self
