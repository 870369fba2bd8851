"""Loading :class:`Settings` from ``modrpc.toml``, ``MODRPC_*`` variables and explicit overrides.

Precedence, highest first: keyword overrides passed to :func:`load_settings`, then environment
variables, then the TOML file, then the defaults in the model. The TOML file uses top-level keys
(no ``[modrpc]`` table), with ``[auth]``, ``[secrets]`` and ``[observability]`` tables for the
nested groups::

    gateway_port = 50051
    ratelimit_url = "redis://127.0.0.1:6379/0"

    [auth]
    issuer = "modrpc-dev"

The same keys as environment variables: ``MODRPC_GATEWAY_PORT``, ``MODRPC_RATELIMIT_URL``,
``MODRPC_AUTH__ISSUER``. Lists and tables given in the environment are JSON
(``MODRPC_AUTH__JWT_ALGORITHMS='["RS256"]'``). Environment variables that do not name a field
are not refused, because other ``MODRPC_`` variables (``MODRPC_SECRET_*``) are not
configuration, but :func:`unknown_env` names them with the closest setting, and every command
warns about them; an unknown key in the file, in a nested variable or in an override is an
error. :func:`setting_sources` tells where each effective value came from (``modrpc config``).

Every problem becomes one :class:`ConfigError` whose message names where the bad value came from
and its key, e.g. ``modrpc.toml: auth.issuer: Input should be a valid string``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_settings import (
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from runtime.config._settings import Settings

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "NOT_SETTINGS",
    "ConfigError",
    "env_name",
    "load_settings",
    "setting_keys",
    "setting_sources",
    "unknown_env",
]

DEFAULT_CONFIG_FILE = Path("modrpc.toml")
"""Read from the working directory when no path is given and the file exists."""

_ENV_PREFIX = "MODRPC_"
_ENV_NESTING = "__"


class ConfigError(ValueError):
    """The configuration is invalid. Expected at startup; the message names the source and key.

    Raised before anything is served, so it is a ``ValueError`` rather than a runtime error that
    maps to a gRPC status.
    """


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Build the process's frozen :class:`Settings`.

    ``path`` names the TOML file; it must exist when given. Without it ``./modrpc.toml`` is read
    if present. ``overrides`` take precedence over everything (the CLI passes ``--port`` here).

        >>> load_settings(gateway_port=0).gateway_port
        0
    """
    toml_path = DEFAULT_CONFIG_FILE if path is None else Path(path)
    if path is not None and not toml_path.is_file():
        raise ConfigError(f"{toml_path}: configuration file not found")
    sources: list[tuple[str, PydanticBaseSettingsSource]] = [
        ("override", InitSettingsSource(Settings, init_kwargs=dict(overrides))),
        ("env", _env_source()),
    ]
    if toml_path.is_file():
        sources.append(("toml", _toml_source(toml_path)))
    try:
        return Settings(_build_sources=(tuple(source for _, source in sources), {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources, toml_path)) from exc
    except SettingsError as exc:
        raise ConfigError(f"environment: {exc}") from exc


def _env_source() -> EnvSettingsSource:
    source = EnvSettingsSource(Settings)
    try:
        source()
    except SettingsError as exc:
        # pydantic-settings names the field but not the variable; name the variable instead.
        raise ConfigError(_describe_env_parse_error(str(exc))) from exc
    return source


def _describe_env_parse_error(detail: str) -> str:
    match = re.search(r'field "(\w+)"', detail)
    field = match.group(1).upper() if match else ""
    names = sorted(
        name
        for name, value in os.environ.items()
        if name.upper().startswith(_ENV_PREFIX + field)
        and value.lstrip()[:1] in ("[", "{")
        and not _is_json(value)
    )
    if not names:
        return f"environment: {detail}"
    return f"{', '.join(names)}: not valid JSON (lists and tables given in the environment must be JSON)"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _toml_source(path: Path) -> TomlConfigSettingsSource:
    try:
        return TomlConfigSettingsSource(Settings, toml_file=path)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from exc


def _describe(
    exc: ValidationError, sources: Sequence[tuple[str, PydanticBaseSettingsSource]], toml_path: Path
) -> str:
    """One line per validation error: ``<where it came from>: <key>: <message>``."""
    data = [(kind, source()) for kind, source in sources]
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        kind = next((kind for kind, values in data if _has(values, loc)), None)
        key = _dotted(loc)
        if kind == "env":
            lines.append(f"{_env_name(loc)}: {message}" if key else f"environment: {message}")
        elif kind == "override":
            lines.append(f"override {key}: {message}" if key else f"override: {message}")
        elif kind == "toml":
            lines.append(f"{toml_path}: {key}: {message}" if key else f"{toml_path}: {message}")
        else:
            lines.append(f"settings: {key}: {message}" if key else f"settings: {message}")
    return "\n".join(lines)


def _has(values: Any, loc: tuple[Any, ...]) -> bool:
    """Whether ``values`` (one source's raw data) holds something at ``loc``."""
    node = values
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return False
    return True


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _env_name(loc: tuple[Any, ...]) -> str:
    """The environment variable that supplied ``loc``: the longest prefix that is set."""
    keys = [part for part in loc if isinstance(part, str)]
    present = {name.upper() for name in os.environ}
    for n in range(len(keys), 0, -1):
        name = _ENV_PREFIX + _ENV_NESTING.join(keys[:n]).upper()
        if name in present:
            return name if n == len(loc) else f"{name} ({_dotted(loc)})"
    return _ENV_PREFIX + _ENV_NESTING.join(keys).upper()


NOT_SETTINGS = ("MODRPC_SECRET_", "MODRPC_SUPERVISOR_PID", "MODRPC_DATA_DIR")
"""``MODRPC_`` variables that are not settings: secrets (the env provider's default prefix),
the supervisor's pid handed to its workers, and the example modules' data folder."""


def setting_keys(model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf setting as a key path (``("auth", "issuer")``), in declaration order."""
    keys: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        inner = info.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            keys += setting_keys(inner, (*prefix, name))
        else:
            keys.append((*prefix, name))
    return keys


def settings_table() -> str:
    """Every setting as a Markdown table (key, environment variable, default, description): the
    README's list, generated so it cannot drift (``modrpc config --markdown``)."""
    rows = ["| Key (`modrpc.toml`) | Environment | Default | What it does |", "|---|---|---|---|"]
    for key in setting_keys():
        model: type[BaseModel] = Settings
        for part in key[:-1]:
            inner = model.model_fields[part].annotation
            assert isinstance(inner, type) and issubclass(inner, BaseModel)
            model = inner
        info = model.model_fields[key[-1]]
        default = info.get_default(call_default_factory=True)
        description = " ".join((info.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{'.'.join(key)}` | `{env_name(key)}` | `{_default_text(key, default)}` | {description} |")
    return "\n".join(rows) + "\n"


def _default_text(key: tuple[str, ...], value: Any) -> str:
    if key == ("auth", "jwt_secret"):
        return "the development secret"
    if value is None or value == () or value == {} or value == []:
        return "(none)"
    if isinstance(value, (tuple, list, frozenset, set)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def env_name(key: tuple[str, ...]) -> str:
    """``("auth", "issuer")`` → ``MODRPC_AUTH__ISSUER``."""
    return _ENV_PREFIX + _ENV_NESTING.join(key).upper()


def unknown_env(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``MODRPC_*`` variables that name no setting, each with the closest valid name (or None).

    pydantic-settings ignores them silently, so a misspelt or misplaced variable
    (``MODRPC_GATEWAY__ADMIN_PORT`` for ``MODRPC_ADMIN_PORT``) would change nothing unnoticed.
    """
    environ = os.environ if environ is None else environ
    keys = setting_keys()
    valid = {env_name(k) for k in keys} | {env_name(k[:1]) for k in keys}
    by_field: dict[str, list[str]] = {}
    for key in keys:
        by_field.setdefault(key[-1].upper(), []).append(env_name(key))
    out: list[tuple[str, str | None]] = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(_ENV_PREFIX) or upper in valid or upper.startswith(NOT_SETTINGS):
            continue
        last = upper.removeprefix(_ENV_PREFIX).rsplit(_ENV_NESTING, 1)[-1]
        same_field = by_field.get(last)
        if same_field:  # the right field in the wrong place
            out.append((name, same_field[0]))
            continue
        close = difflib.get_close_matches(upper, sorted(valid), n=1, cutoff=0.6)
        out.append((name, close[0] if close else None))
    return out


def setting_sources(path: Path | None = None, **overrides: Any) -> list[tuple[str, Any, str]]:
    """Each setting's effective value and where it came from: ``(key, value, source)``.

    ``source`` is ``default``, the TOML file's name, the environment variable, or
    ``command line`` for an override.
    """
    settings = load_settings(path, **overrides)
    toml_path = DEFAULT_CONFIG_FILE if path is None else Path(path)
    toml_data = tomllib.loads(toml_path.read_text(encoding="utf-8")) if toml_path.is_file() else {}
    env_data = _env_source()()
    environ = {k.upper() for k in os.environ}
    rows = []
    for key in setting_keys():
        value: Any = settings
        for part in key:
            value = getattr(value, part)
        # The variable that set it: its own (MODRPC_LIMITS__IDLE_TIMEOUT), or a section's whose
        # JSON value holds it (MODRPC_LIMITS='{"idle_timeout": 15}'). Another setting of the same
        # section set from the environment leaves this one to the file or the default.
        variable = next((env_name(key[:n]) for n in range(len(key), 0, -1) if env_name(key[:n]) in environ), None)
        if any(_has(overrides, key[:n]) for n in range(1, len(key) + 1)):
            source = "command line"
        elif variable is not None and _has(env_data, key):
            source = variable
        elif _has(toml_data, key):
            source = str(toml_path)
        else:
            source = "default"
        rows.append((".".join(key), value, source))
    return rows
