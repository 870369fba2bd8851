"""Where secret values come from: the environment, a locked-down directory, or Vault.

Each provider answers one question, "what is secret NAME?", with the value or ``None`` when it
does not have it. A provider that cannot be reached raises :class:`runtime.errors.Unavailable`;
the secrets manager adds the secret's name. Foreign errors (``OSError``, hvac, requests) are
translated here, at the edge, and never carry a value in their message.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from runtime.config import ConfigError, SecretsSettings
from runtime.errors import InternalError, Unavailable

__all__ = [
    "EnvProvider",
    "FileProvider",
    "SecretProvider",
    "VaultProvider",
    "close_provider",
    "env_key",
    "providers_from_settings",
]


class SecretProvider(Protocol):
    """One source of secret values."""

    @property
    def name(self) -> str:
        """Short name used in messages and config: ``env``, ``file``, ``vault``."""
        ...

    async def get(self, name: str) -> str | None:
        """The value of secret ``name``, or ``None`` when this provider does not have it."""
        ...


@runtime_checkable
class _Closeable(Protocol):
    async def close(self) -> None: ...


def env_key(prefix: str, name: str) -> str:
    """The variable holding secret ``name``: ``db.password`` → ``MODRPC_SECRET_DB_PASSWORD``."""
    return prefix + "".join(c if c.isalnum() else "_" for c in name).upper()


class EnvProvider:
    """Secrets from environment variables named ``<prefix><NAME upper-cased>``.

    ``environ`` defaults to ``os.environ``; tests and embedders pass their own mapping.
    """

    name = "env"

    def __init__(
        self, prefix: str = "MODRPC_SECRET_", environ: Mapping[str, str] | None = None
    ) -> None:
        self._prefix = prefix
        self._environ: Mapping[str, str] = os.environ if environ is None else environ

    async def get(self, name: str) -> str | None:
        return self._environ.get(env_key(self._prefix, name))


class FileProvider:
    """Secrets from files: secret NAME is the content of ``<directory>/<NAME>``.

    One trailing newline is dropped (editors add one). The directory and each file must not be
    accessible to group or others (``mode & 0o077 == 0``); anything looser is refused with an
    :class:`~runtime.errors.InternalError` naming the path and its mode, never the value, because
    a world-readable secret has already leaked and serving it would hide that. A missing
    directory simply holds no secrets.
    """

    name = "file"

    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)

    async def get(self, name: str) -> str | None:
        # Tiny reads, but still file I/O: keep it off the event loop.
        return await asyncio.to_thread(self._read, name)

    def _read(self, name: str) -> str | None:
        try:
            dir_stat = os.stat(self._directory)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise Unavailable(
                f"secret directory {self._directory} cannot be read: {exc.strerror}"
            ) from exc
        if not stat.S_ISDIR(dir_stat.st_mode):
            raise InternalError(f"secret directory {self._directory} is not a directory")
        _refuse_loose_mode("secret directory", self._directory, dir_stat.st_mode)
        path = self._directory / name
        try:
            # Open first, then check the mode of what was opened: no window between check and use.
            with open(path, "rb") as handle:
                file_stat = os.fstat(handle.fileno())
                if not stat.S_ISREG(file_stat.st_mode):
                    raise InternalError(f"secret file {path} is not a regular file")
                _refuse_loose_mode("secret file", path, file_stat.st_mode)
                data = handle.read()
        except (FileNotFoundError, IsADirectoryError):
            return None
        except OSError as exc:
            raise Unavailable(f"secret file {path} cannot be read: {exc.strerror}") from exc
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InternalError(f"secret file {path} is not UTF-8 text") from exc
        return text[:-1] if text.endswith("\n") else text


def _refuse_loose_mode(what: str, path: Path, mode: int) -> None:
    loose = stat.S_IMODE(mode) & 0o077
    if loose:
        fix = "chmod 700" if what.endswith("directory") else "chmod 600"
        raise InternalError(
            f"{what} {path} has mode {oct(stat.S_IMODE(mode))}: it must not be accessible to "
            f"group or others ({fix} {path})"
        )


class VaultProvider:
    """Secrets from HashiCorp Vault's KV v2 engine, through ``hvac``.

    Secret NAME is the field ``field`` (default ``value``) of ``<mount>/<path_prefix>/<NAME>``.
    hvac is imported only when a Vault provider is built, so it stays an optional dependency
    (``pip install 'modrpc[vault]'``). hvac is synchronous; calls run in a thread.
    """

    name = "vault"

    def __init__(
        self,
        url: str,
        token: str,
        *,
        mount: str = "secret",
        path_prefix: str = "modrpc",
        field: str = "value",
        timeout: float = 5.0,
    ) -> None:
        try:
            import hvac
        except ImportError as exc:  # pragma: no cover - hvac is installed in development
            raise ConfigError(
                "the vault secrets provider needs the 'hvac' package: pip install 'modrpc[vault]'"
            ) from exc
        self._url = url
        self._mount = mount
        self._prefix = path_prefix.strip("/")
        self._field = field
        self._client: Any = hvac.Client(url=url, token=token, timeout=timeout)
        self._closed = False

    async def get(self, name: str) -> str | None:
        if self._closed:
            raise Unavailable("the Vault provider is closed")
        return await asyncio.to_thread(self._read, name)

    def _read(self, name: str) -> str | None:
        import hvac.exceptions

        path = f"{self._prefix}/{name}" if self._prefix else name
        try:
            response = self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self._mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return None
        except (hvac.exceptions.VaultError, OSError) as exc:  # requests' errors are OSErrors
            # Only the error's type: a response body is not something to repeat in a message.
            raise Unavailable(f"Vault at {self._url} failed: {type(exc).__name__}") from exc
        value = response.get("data", {}).get("data", {}).get(self._field)
        return None if value is None else str(value)

    async def close(self) -> None:
        """Close the HTTP session. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._client.adapter.close()


def providers_from_settings(
    settings: SecretsSettings, environ: Mapping[str, str] | None = None
) -> list[SecretProvider]:
    """The providers ``settings.providers`` names, in order.

    The Vault token is read from the variable ``settings.vault_token_env`` names; config never
    holds the token itself. A missing token is a :class:`~runtime.config.ConfigError` naming the
    variable, found at startup.
    """
    env = os.environ if environ is None else environ
    providers: list[SecretProvider] = []
    for kind in settings.providers:
        if kind == "env":
            providers.append(EnvProvider(settings.env_prefix, environ=env))
        elif kind == "file":
            providers.append(FileProvider(settings.file_dir))
        else:
            token = env.get(settings.vault_token_env)
            if not token:
                raise ConfigError(
                    f"the vault secrets provider needs a token in ${settings.vault_token_env} "
                    "(secrets.vault_token_env), which is not set"
                )
            providers.append(
                VaultProvider(
                    settings.vault_url or "",
                    token,
                    mount=settings.vault_mount,
                    path_prefix=settings.vault_path_prefix,
                )
            )
    return providers


async def close_provider(provider: SecretProvider) -> None:
    """Close ``provider`` if it holds resources (the Vault HTTP session)."""
    if isinstance(provider, _Closeable):
        await provider.close()
