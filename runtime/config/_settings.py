"""The settings model: every knob of a modrpc process, frozen and validated.

Nothing here reads files or the environment; :func:`runtime.config.load_settings` does that. The
models are frozen all the way down: sequences are tuples and mappings are read-only
``MappingProxyType`` views, so a ``Settings`` handed to a module through ``gctx.config`` cannot
be changed by anyone (SPEC §3, Property 32).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from limits import parse as parse_rate_limit
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
    "LimitsSettings",
    "ObservabilitySettings",
    "PlaygroundSettings",
    "RetentionSettings",
    "SecretsSettings",
    "Settings",
    "TlsSettings",
    "is_loopback",
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
    snapshot_roles: tuple[str, ...] = Field(
        default=(),
        description=(
            "Roles whose callers may ask for a snapshot of their call with 'x-flags: snapshot'. "
            "A snapshot stores the whole request, so it is a privilege: by default nobody may, "
            "and the gateway drops the flag for everyone else. A method's own 'snapshot' policy "
            "applies whatever the caller sends."
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
    audit_max_value_chars: int = Field(
        default=1024,
        ge=64,
        description=(
            "Longest text kept in one audit value (an event's error, a claim); a longer one is cut "
            "to this many characters and followed by its full length and SHA-256, so an audit "
            "record never grows with what a caller sends."
        ),
    )


_DAY = 86_400.0
_MIB = 1024 * 1024


class LimitsSettings(BaseModel):
    """What bounds every server's connections, streams, time and memory (the gateway's and each
    worker's gRPC port through grpc's own server options, and each worker's lane).

    An attacker on the network can only open connections, streams and bytes up to these numbers;
    each one is also the most a slow or broken client can hold.
    """

    model_config = _FROZEN

    max_connections: int = Field(
        default=1000,
        ge=1,
        description=(
            "Connections one server accepts at once; further ones are closed as they arrive "
            "(grpc.max_allowed_incoming_connections). Never more than the process's open-file "
            "limit, less a reserve for its own files and calls: a lower limit wins, and is logged."
        ),
    )
    max_concurrent_streams: int = Field(
        default=100,
        ge=1,
        description=(
            "Calls one gRPC connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS, "
            "grpc.max_concurrent_streams). Streams still being torn down count too, so a client "
            "that opens and resets streams in a loop (rapid reset) is refused past it."
        ),
    )
    max_concurrent_calls: int = Field(
        default=256,
        ge=1,
        description=(
            "Calls one gRPC server runs at once, over all connections, including calls whose "
            "request is still arriving; further ones get RESOURCE_EXHAUSTED at once. With "
            "max_message_bytes it bounds the memory requests can pin."
        ),
    )
    max_calls_per_client: int = Field(
        default=64,
        ge=1,
        description=(
            "Calls one client may have running through the gateway at once; further ones get "
            "RESOURCE_EXHAUSTED at once, naming this setting. A client is the principal it "
            "authenticated as, or, calling a public method without credentials, its IP address: "
            "so one anonymous address holding streams open cannot take all max_concurrent_calls."
        ),
    )
    max_anonymous_calls: int = Field(
        default=128,
        ge=1,
        description=(
            "Calls all callers without credentials together may have running through the gateway "
            "at once (public methods); further anonymous ones get RESOURCE_EXHAUSTED at once, "
            "naming this setting. Below max_concurrent_calls, it keeps the rest for callers with "
            "credentials, however many addresses the anonymous ones come from."
        ),
    )
    unrouted_rate_limit: str = Field(
        default="100/second",
        description=(
            "Calls one client address (an IPv6 one by its /64) may make at the gateway that never "
            "reach a module: grpc's health and reflection services and methods no module has, "
            "which need no credentials, and route calls refused for their credentials; counted "
            "in each gateway process. Further ones get "
            "RESOURCE_EXHAUSTED with RetryInfo, naming this setting. A stream counts when it "
            "opens, and a reflection stream again for each further request. Health checkers and "
            "grpcurl make a few calls a second. An address refused more often than this allows "
            "calls is flooding: its connections are closed and it is banned as for rapid reset "
            "(reset_ban)."
        ),
    )
    lane_max_connections: int = Field(
        default=256,
        ge=1,
        description=(
            "Connections one worker's lane accepts at once (at most max_connections); further "
            "ones are closed as they arrive, and their clients call over gRPC instead. Its "
            "clients are the deployment's gateways and workers, one connection each; every "
            "connection holds asyncio's 256 KiB TLS read buffer from its first moment, before "
            "its certificate is checked, so this bounds what silent connections can hold."
        ),
    )
    lane_max_concurrent_calls: int = Field(
        default=1024,
        ge=1,
        description=(
            "Calls one lane connection runs at once; further requests wait, in order, and the "
            "lane stops reading once more wait than may run."
        ),
    )
    max_buffered_bytes: int = Field(
        default=64 * _MIB,
        ge=_MIB,
        description=(
            "Bytes one lane connection may hold for its peer: requests read and waiting, and "
            "answers written and not yet read. Past it the lane stops reading; a peer that "
            "does not read its answers past it is cut off."
        ),
    )
    max_metadata_bytes: int = Field(
        default=16 * 1024,
        ge=4 * 1024,
        le=_MIB,
        description=(
            "Bytes of request metadata (headers, counted as HTTP/2 does: name, value and 32 "
            "bytes each) one gRPC call may send; a call past it is refused RESOURCE_EXHAUSTED "
            "in grpc core, before Python sees a header (grpc.max_metadata_size and "
            "grpc.absolute_max_metadata_size, both this, so the refusal is never a coin toss)."
        ),
    )
    stream_window_bytes: int = Field(
        default=64 * 1024,
        ge=16 * 1024,
        le=16 * _MIB,
        description=(
            "Bytes a gRPC client may send on one stream ahead of what the server has read "
            "(the HTTP/2 stream window, grpc.http2.lookahead_bytes, with grpc's window growth "
            "(grpc.http2.bdp_probe) off): a client whose answers are not being read cannot pile "
            "up more than this per stream, beyond the message being read. The same window "
            "bounds what a worker's gRPC answers may pile up in the gateway."
        ),
    )
    handshake_timeout: float = Field(
        default=10.0,
        gt=0.0,
        description=(
            "Seconds a new connection has to say something: the HTTP/2 preface and settings on "
            "gRPC (grpc.server_handshake_timeout_ms), a whole frame on the lane. Also how long a "
            "lane frame may take to arrive once it has begun, however it trickles."
        ),
    )
    idle_timeout: float = Field(
        default=300.0,
        gt=0.0,
        description=(
            "Seconds a connection may stay open with no call on it before the server closes it "
            "(grpc.max_connection_idle_ms, with a GOAWAY; the lane closes it)."
        ),
    )
    max_connection_age: float = Field(
        default=300.0,
        gt=0.0,
        description=(
            "Seconds a gRPC connection may live before the server asks the client to reconnect "
            "with a GOAWAY (grpc.max_connection_age_ms, with jitter). Clients reconnect at no "
            "cost to their calls; a connection that abuses the server cannot outlive it."
        ),
    )
    max_connection_age_grace: float = Field(
        default=30.0,
        ge=0.0,
        description=(
            "Seconds the calls of a connection past its age may take to finish before it is cut "
            "(grpc.max_connection_age_grace_ms): also the longest a request that never finishes "
            "arriving can hold its memory."
        ),
    )
    keepalive_time: float = Field(
        default=60.0,
        gt=0.0,
        description=(
            "Seconds between the server's keepalive pings on a gRPC connection "
            "(grpc.keepalive_time_ms); on the lane, the silence after which TCP keepalive probes "
            "a connection."
        ),
    )
    keepalive_timeout: float = Field(
        default=20.0,
        gt=0.0,
        description=(
            "Seconds a client has to answer a keepalive ping before its connection is closed "
            "(grpc.keepalive_timeout_ms): a client that stopped reading (a slow reader holding "
            "its answers in the server) is cut off within keepalive_time + keepalive_timeout. "
            "On the lane, how long a TCP keepalive probe may go unanswered (a client host that "
            "vanished)."
        ),
    )
    min_client_ping_interval: float = Field(
        default=10.0,
        gt=0.0,
        description=(
            "Shortest interval between a client's pings without data "
            "(grpc.http2.min_ping_interval_without_data_ms); more often counts a strike, and "
            "past max_ping_strikes the server answers GOAWAY 'too_many_pings'."
        ),
    )
    max_ping_strikes: int = Field(
        default=2,
        ge=1,
        description="Pings too early a gRPC client may send before it is cut off (grpc.http2.max_ping_strikes).",
    )
    max_reset_streams: int = Field(
        default=200,
        ge=0,
        description=(
            "Streams a client connection to the gateway may have reset before the server "
            "answered (rapid reset); once it has reset this many, and at least half of the "
            "streams it opened, the connection is closed and counted in "
            "modrpc_connections_closed_total. The same rule holds for one address's connections "
            "together over 10 s, so hanging up before each reaches it does not help. A call "
            "cancelled after it was answered, or after running a second, is not a reset. "
            "0: never."
        ),
    )
    reset_check_interval: float = Field(
        default=0.25,
        gt=0.0,
        description=(
            "Seconds between the gateway's looks at grpc's per-connection stream counters for "
            "max_reset_streams (one number per look until resets add up)."
        ),
    )
    reset_ban: float = Field(
        default=10.0,
        ge=0.0,
        description=(
            "Seconds for which, once the gateway has closed a connection for rapid reset "
            "(max_reset_streams), or an address for flooding calls that reach no module "
            "(unrouted_rate_limit), new connections from its address are refused in the kernel "
            "(their TCP SYN dropped, so grpc never sees them); each repeat doubles it, up to "
            "reset_ban_max. Connections already open from that address are left alone. 0: never."
        ),
    )
    reset_ban_max: float = Field(
        default=600.0,
        gt=0.0,
        description=(
            "The longest an address is refused for repeated rapid reset (reset_ban, doubled at "
            "each repeat); an address that stays out of trouble this long after its ban ends starts over."
        ),
    )
    reset_ban_exempt: tuple[str, ...] = Field(
        default=(),
        description=(
            "Addresses or networks (CIDR: 10.0.0.0/8) never banned for rapid reset (reset_ban): "
            "a proxy or load balancer in front of the gateway, whose one address stands for "
            "every client behind it. Its connections are still closed for rapid reset."
        ),
    )

    @field_validator("reset_ban_exempt")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"{network!r} is not an IP address or network (CIDR): {exc}") from None
        return value

    @field_validator("unrouted_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            amount = parse_rate_limit(value).amount
        except ValueError:
            amount = 0
        if amount < 1:
            raise ValueError(f"{value!r} is not a rate limit such as '50/second' or '5 per minute'")
        return value

    admin_max_connections: int = Field(
        default=64,
        ge=1,
        description=(
            "Connections (and requests) the admin port serves at once (uvicorn's "
            "limit_concurrency); more are answered 503 at once."
        ),
    )
    admin_keep_alive: int = Field(
        default=5,
        ge=1,
        description="Seconds an idle keep-alive connection to the admin port is kept open (uvicorn's timeout_keep_alive).",
    )
    admin_max_head_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        description=(
            "Bytes of request line and headers the admin port buffers while they arrive "
            "(h11's max_incomplete_event_size); a larger head is answered 400."
        ),
    )
    admin_head_timeout: float = Field(
        default=10.0,
        gt=0.0,
        description=(
            "Seconds an admin connection has to send a whole request head, from its start or its "
            "previous answer; a slower client (slow loris) is disconnected."
        ),
    )
    reserved_files: int = Field(
        default=256,
        ge=16,
        description=(
            "Open files kept back from max_connections for the process's own use (store, audit, "
            "connections to workers, the metrics port)."
        ),
    )


class RetentionSettings(BaseModel):
    """How long, and how much, audit records and snapshots are kept. Enforced in the background
    by every worker; what is removed is counted in ``modrpc_audit_pruned_total`` and
    ``modrpc_snapshots_pruned_total``."""

    model_config = _FROZEN

    audit_max_age: float = Field(
        default=30 * _DAY,
        gt=0.0,
        description="Seconds an audit record is kept (the file's segments, or the store's audit stream).",
    )
    audit_max_bytes: int = Field(
        default=1024 * _MIB,
        ge=_MIB,
        description="Bytes of audit records kept; the oldest go first past it.",
    )
    snapshot_max_age: float = Field(
        default=7 * _DAY, gt=0.0, description="Seconds a stored snapshot is kept."
    )
    snapshot_max_bytes: int = Field(
        default=256 * _MIB,
        ge=_MIB,
        description="Bytes of stored snapshots kept; the oldest go first past it.",
    )
    interval: float = Field(
        default=60.0,
        gt=0.0,
        description="Seconds between two retention passes.",
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class PlaygroundSettings(BaseModel):
    """The playground: the browser tool served on the admin port under ``/playground``."""

    model_config = _FROZEN

    enabled: bool | None = Field(
        default=None,
        description=(
            "Serve the playground. Unset: on when the gateway listens on a loopback address "
            "(development), off otherwise. true elsewhere serves it behind a token with `role`."
        ),
    )
    role: str = Field(
        default="playground:admin",
        min_length=1,
        description=(
            "Role a bearer token needs to use the playground when it is not on loopback (checked "
            "by the gateway's own authentication: JWT or API key)."
        ),
    )
    traces: int = Field(
        default=5000,
        ge=100,
        le=1_000_000,
        description="Spans and audit records kept in memory for the playground's recent traces.",
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
        description="HTTP port serving Prometheus /metrics, /healthz and the playground; 0 disables the admin server.",
    )
    modules_dir: Path = Field(
        default=Path("modules"), description="Folder holding one package per module."
    )
    data_dir: Path = Field(
        default=Path(".modrpc"),
        description=(
            "Where workers keep local state: the outbox of events the fabric has not taken yet "
            "(the example modules keep their SQLite files here too)."
        ),
    )
    log_level: LogLevel = Field(default="INFO", description="Root log level (case-insensitive).")
    log_format: Literal["auto", "console", "json"] = Field(
        default="auto",
        description=(
            "Log lines: 'console' (module, level, request id, message, for people), 'json' (one "
            "object per line, for collectors), or 'auto': console on a terminal, JSON otherwise."
        ),
    )
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
        description="Queue fabric: memory:// (embedded), nats://host:port (JetStream) or tls://host:port (JetStream over mutual TLS with the deployment identity).",
    )
    ratelimit_url: str = Field(
        default="memory://",
        description="Rate-limit counters: memory:// (per process) or redis://host:port/db (shared by gateways).",
    )
    ratelimit_failure_mode: Literal["open", "closed"] = Field(
        default="open",
        description=(
            "When Redis cannot be reached: 'open' lets calls through, 'closed' refuses them with "
            "UNAVAILABLE naming the store."
        ),
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
    worker_hang_seconds: float = Field(
        default=10.0,
        ge=0.0,
        description=(
            "modrpc up kills and restarts a worker that answers no health check for this long "
            "(it hangs); 0 turns the check off."
        ),
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
    limits: LimitsSettings = Field(
        default_factory=LimitsSettings,
        description="Connections, streams, timeouts and buffers of every server.",
    )
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings,
        description="How long and how much audit and snapshots are kept.",
    )
    playground: PlaygroundSettings = Field(
        default_factory=PlaygroundSettings,
        description="The browser playground on the admin port (catalog, explorer, traces, replay).",
    )

    @property
    def playground_on(self) -> bool:
        """Whether the playground is served: as configured, else only on a loopback host."""
        if not self.admin_port:
            return False
        enabled = self.playground.enabled
        return is_loopback(self.host) if enabled is None else enabled

    @property
    def playground_open(self) -> bool:
        """Whether the playground needs no token: served on loopback, with no explicit opt-in
        for remote use. Anything else asks every API call for a token with the role."""
        return self.playground_on and is_loopback(self.host)

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
