"""The module manifest an author writes (``modules/<name>/module.toml``) and its loader.

The file is parsed with :mod:`tomllib` and validated by frozen pydantic models that refuse
unknown keys, so a typo such as ``[capabilites]`` or ``timeot = 2`` is an error rather than a
silently ignored setting. Scalars are strict: TOML is typed, so ``timeout = "2"`` is a mistake
worth reporting, not a string worth coercing. Every error names the file and the dotted key::

    modules/users/module.toml: methods.CreateUser.timeout: Input should be a valid number

A complete example::

    [module]
    name = "users"
    version = "1.2.0"
    warm_pool = 1

    [capabilities]
    modules = ["inventory"]
    publish = ["users.created"]

    [versions]
    stable = "2025-06-01"

    [methods.CreateUser]
    roles = ["users:write"]
    rate_limit = "100/second"
    timeout = 2.0

    [[hooks]]
    id = "normalise-email"
    phase = "before"
    target = "modules.users.hooks:normalise_email"
    method = "CreateUser"
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from runtime.errors import ManifestError
from runtime.manifest._names import HOOK_TARGET, METHOD_NAME, MODULE_NAME, is_topic_pattern
from runtime.versions import is_version_id, parse_version_id

__all__ = [
    "DEFAULT_HOOK_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "Capabilities",
    "HookDecl",
    "MethodPolicy",
    "ModuleInfo",
    "ModuleManifest",
    "RetryPolicy",
    "load_manifest",
    "parse_manifest",
]

DEFAULT_TIMEOUT = 30.0
"""Seconds a method may run when its policy names no timeout; the caller's deadline may cut it."""

DEFAULT_HOOK_TIMEOUT = 5.0
"""Seconds one attempt of a hook may run when the hook names no timeout."""

_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
_RATE_LIMIT = re.compile(r"([1-9][0-9]*)/(second|minute|hour|day)")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HOOK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ROLE = re.compile(r"[A-Za-z0-9_.:*/-]+")
_SECRET = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)


# -- field types ---------------------------------------------------------------------------------
def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _as_tuple(value: object) -> object:
    """TOML arrays arrive as lists; the models keep tuples so a manifest cannot be mutated."""
    return tuple(value) if isinstance(value, list) else value


def _topic(value: str) -> str:
    if not is_topic_pattern(value):
        raise ValueError(
            f"{value!r} is not a topic: dot-separated tokens of letters, digits, '_' or '-', "
            "with '*' for one token and '>' (last) for the rest"
        )
    return value


def _network(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port with a port from 1 to 65535")
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{value!r} has an invalid IPv6 address") from None
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{value!r} does not name a valid host")
    return f"{host}:{int(port)}"


def _version_id(value: str) -> str:
    if not is_version_id(value):
        raise ValueError(
            f"{value!r} is not a version id (a date such as 2025-06-01, or tsv:<seconds>-<module>-<seq>)"
        )
    return value


ModuleName = Annotated[str, _matching(MODULE_NAME, "a lower_snake_case module name")]
MethodName = Annotated[str, _matching(METHOD_NAME, "a PascalCase method name")]
Topic = Annotated[str, AfterValidator(_topic)]
SecretName = Annotated[str, _matching(_SECRET, "a secret name")]
HostPort = Annotated[str, AfterValidator(_network)]
Role = Annotated[str, _matching(_ROLE, "a role (letters, digits and _ . : * / -)")]
Label = Annotated[str, _matching(_LABEL, "a version label")]
VersionId = Annotated[str, AfterValidator(_version_id)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def _rate_limit(value: str) -> str:
    if not _RATE_LIMIT.fullmatch(value):
        raise ValueError(
            f"{value!r} is not 'N/second', 'N/minute', 'N/hour' or 'N/day' with N >= 1"
        )
    return value


def _semver(value: str) -> str:
    if not _SEMVER.fullmatch(value):
        raise ValueError(f"{value!r} is not a semantic version such as 1.2.0")
    return value


_AsTuple = BeforeValidator(_as_tuple)
ModuleNames = Annotated[tuple[ModuleName, ...], _AsTuple]
Topics = Annotated[tuple[Topic, ...], _AsTuple]
SecretNames = Annotated[tuple[SecretName, ...], _AsTuple]
HostPorts = Annotated[tuple[HostPort, ...], _AsTuple]
Roles = Annotated[tuple[Role, ...], _AsTuple]
RateLimit = Annotated[str, AfterValidator(_rate_limit)]
SemVer = Annotated[str, AfterValidator(_semver)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# -- the sections --------------------------------------------------------------------------------
class ModuleInfo(_Frozen):
    """The ``[module]`` table: who the module is and how it is loaded."""

    name: ModuleName = Field(
        description="lower_snake_case module name; must equal the folder name."
    )
    version: SemVer = Field(description="Semantic version of the module (https://semver.org).")
    description: str = Field(default="", description="One line saying what the module is for.")
    handlers: Annotated[str, _matching(_DOTTED, "a dotted import path")] | None = Field(
        default=None,
        description=(
            "Import path of the module holding the handlers. By default the handlers.py next to "
            "module.toml, imported as <folder's parent>.<folder>.handlers (modules.users.handlers)."
        ),
    )
    warm_pool: int = Field(
        default=1, ge=0, description="Minimum live instances kept for a pinned version."
    )


class Capabilities(_Frozen):
    """The ``[capabilities]`` table: everything outside itself the module may touch.

    Nothing is allowed unless declared here; in particular there is no network egress by default.
    """

    modules: ModuleNames = Field(default=(), description="Modules this module may call.")
    publish: Topics = Field(
        default=(), description="Topics it may publish to ('*' and '>' allowed)."
    )
    subscribe: Topics = Field(
        default=(), description="Topics it may subscribe to ('*' and '>' allowed)."
    )
    secrets: SecretNames = Field(
        default=(), description="Secrets it may read through gctx.secrets."
    )
    network: HostPorts = Field(default=(), description="host:port pairs it may connect to.")


class RetryPolicy(_Frozen):
    """How a module client retries a call; it only ever retries idempotent methods."""

    attempts: int = Field(default=3, ge=1, le=10, description="Total attempts, the first included.")
    initial_backoff: Seconds = Field(default=0.05, description="Seconds before the first retry.")
    max_backoff: Seconds = Field(default=1.0, description="Upper bound of any backoff, in seconds.")
    backoff_multiplier: float = Field(
        default=2.0, ge=1.0, le=10.0, description="Growth factor between backoffs."
    )
    per_try_timeout: Seconds | None = Field(
        default=None,
        description=(
            "Seconds one attempt may take before it is abandoned and tried again on another "
            "instance (an instance that hangs costs no call); unset: every attempt may use what "
            "is left of the deadline."
        ),
    )

    @field_validator("max_backoff")
    @classmethod
    def _ordered(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("initial_backoff")
        if initial is not None and value < initial:
            raise ValueError(
                f"max_backoff {value} must not be smaller than initial_backoff {initial}"
            )
        return value


class MethodPolicy(_Frozen):
    """A ``[methods.<Method>]`` table. A method without one gets every default."""

    public: bool = Field(default=False, description="True when callers need no credentials.")
    roles: Roles = Field(default=(), description="Roles a caller must all hold.")
    inner_roles: Literal["caller", "module"] = Field(
        default="caller",
        description=(
            "On an inner call (another module calling this method for its own caller): 'caller' "
            "checks `roles` against that original caller, as if it had called through the "
            "gateway; 'module' lets the calling module's declaration (capabilities.modules) "
            "stand in for them, whoever the caller is."
        ),
    )
    rate_limit: RateLimit | None = Field(
        default=None,
        description="'N/second', 'N/minute', 'N/hour' or 'N/day' per caller; a stream counts once, "
        "when it opens. None for no limit.",
    )
    message_rate_limit: RateLimit | None = Field(
        default=None,
        description="For a streaming method: request messages per caller, in the same form; a "
        "stream that sends past it ends RESOURCE_EXHAUSTED. None for no limit.",
    )
    timeout: Seconds = Field(default=DEFAULT_TIMEOUT, description="Seconds the handler may run.")
    idempotent: bool = Field(
        default=False, description="True when a repeated call is harmless, so it may be retried."
    )
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy, description="Retry policy, used only when idempotent."
    )
    snapshot: bool = Field(default=False, description="Store a snapshot of every call.")

    def rate(self) -> tuple[int, int] | None:
        """The rate limit as (calls, period in seconds), or None when unlimited."""
        if self.rate_limit is None:
            return None
        count, unit = self.rate_limit.split("/")
        return int(count), {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[unit]


class HookDecl(_Frozen):
    """One ``[[hooks]]`` entry: a function run before, after, or on failure of handlers."""

    id: Annotated[str, _matching(_HOOK_ID, "a hook id")] = Field(
        description="Unique id within the module."
    )
    phase: Literal["before", "after", "catch"] = Field(description="When the hook runs.")
    target: Annotated[str, _matching(HOOK_TARGET, "an import target 'package.module:function'")] = (
        Field(description="The hook function, as 'package.module:function' or, inside the module's own package, '.module:function'.")
    )
    method: MethodName | None = Field(
        default=None, description="The method this hook belongs to; absent for a module-level hook."
    )
    timeout: Seconds = Field(
        default=DEFAULT_HOOK_TIMEOUT, description="Seconds one attempt may run."
    )
    retries: int = Field(
        default=0, ge=0, le=10, description="Extra attempts after a failure or timeout."
    )

    @property
    def level(self) -> Literal["module", "handler"]:
        return "module" if self.method is None else "handler"


class ModuleManifest(_Frozen):
    """A whole ``module.toml``."""

    module: ModuleInfo = Field(description="Who the module is.")
    capabilities: Capabilities = Field(
        default_factory=Capabilities, description="What it may touch."
    )
    versions: dict[Label, VersionId] = Field(
        default_factory=dict, description="Labels (stable, latest, v1.2.0) mapped to version ids."
    )
    methods: dict[MethodName, MethodPolicy] = Field(
        default_factory=dict, description="Per-method policy, keyed by gRPC method name."
    )
    hooks: Annotated[tuple[HookDecl, ...], _AsTuple] = Field(
        default=(), description="Module- and handler-level hooks."
    )

    @field_validator("hooks")
    @classmethod
    def _unique_ids(cls, hooks: tuple[HookDecl, ...]) -> tuple[HookDecl, ...]:
        seen: set[str] = set()
        for hook in hooks:
            if hook.id in seen:
                raise ValueError(f"hook id {hook.id!r} is declared twice")
            seen.add(hook.id)
        return hooks

    @model_validator(mode="after")
    def _versions_belong_here(self) -> ModuleManifest:
        for label, version in self.versions.items():
            parsed = parse_version_id(version)
            if parsed is not None and parsed.module is not None and parsed.module != self.module.name:
                raise ValueError(f"versions.{label}: {version!r} belongs to module {parsed.module!r}")
        return self

    @property
    def name(self) -> str:
        return self.module.name

    def policy(self, method: str) -> MethodPolicy:
        """The declared policy of ``method``, or the defaults when it declares none."""
        return self.methods.get(method) or _DEFAULT_POLICY


_DEFAULT_POLICY = MethodPolicy()


# -- loading -------------------------------------------------------------------------------------
def load_manifest(path: Path) -> ModuleManifest:
    """Read and validate a ``module.toml``; the module name must equal its folder's name.

    Raises :class:`~runtime.errors.ManifestError` naming the file and the key (or line) at fault.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(
            f"{path}: cannot read the module manifest: {exc.strerror or exc}"
        ) from exc
    manifest = parse_manifest(text, source=str(path))
    folder = path.parent.name
    if manifest.module.name != folder:
        raise ManifestError(
            f"{path}: module.name: {manifest.module.name!r} must equal the folder name {folder!r}"
        )
    return manifest


def parse_manifest(text: str, *, source: str) -> ModuleManifest:
    """Validate manifest text; ``source`` is the file name used in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{source}: invalid TOML: {exc}") from exc
    try:
        return ModuleManifest.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {_describe(err)}" for err in exc.errors(include_url=False)]
        raise ManifestError("\n".join(lines)) from exc


def _describe(err: ErrorDetails) -> str:
    """``methods.CreateUser.timeout: Input should be a valid number``."""
    loc = tuple(err["loc"])
    key = _dotted(loc)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        msg = f"unknown key {loc[-1]!r}"
        if allowed:
            msg += f"; allowed keys are {', '.join(allowed)}"
    elif err["type"] == "value_error":
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
    else:
        msg = err["msg"]
    return f"{key}: {msg}" if key else msg


def _dotted(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            continue  # the error is about the key itself, which the previous part already names
        else:
            out += f".{part}" if out else part
    return out


def _allowed_keys(loc: Sequence[int | str]) -> list[str]:
    """The keys valid at ``loc``, found by walking the models, for "unknown key" messages."""
    model: Any = ModuleManifest
    expect_key = False
    for part in loc:
        if expect_key:  # a dict key or list index: step into the container's item type
            expect_key = False
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        model, expect_key = _unwrap(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """A field's model type, and whether a key or index sits between it and the field."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (tuple, list):
        return typing.get_args(annotation)[0], True
    if origin is dict:
        return typing.get_args(annotation)[1], True
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(inner[0]) if len(inner) == 1 else (annotation, False)
    return annotation, False
