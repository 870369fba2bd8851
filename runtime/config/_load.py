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
(``MODRPC_AUTH__JWT_ALGORITHMS='["RS256"]'``). Environment variables that do not name a field are
ignored, because other ``MODRPC_`` variables (``MODRPC_SECRET_*``) are not configuration; an
unknown key in the file, in a nested variable or in an override is an error.

Every problem becomes one :class:`ConfigError` whose message names where the bad value came from
and its key, e.g. ``modrpc.toml: auth.issuer: Input should be a valid string``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import (
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from runtime.config._settings import Settings

__all__ = ["DEFAULT_CONFIG_FILE", "ConfigError", "load_settings"]

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
