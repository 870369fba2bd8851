"""The secrets manager behind ``gctx.secrets``: capability check, TTL cache, providers in order."""

from __future__ import annotations

import copy
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from runtime.config import SecretsSettings
from runtime.errors import InvalidArgument, ModrpcError, NotFound, Unavailable
from runtime.secrets._providers import SecretProvider, close_provider, providers_from_settings
from runtime.secrets._redact import RedactingFilter, Redactor
from runtime.secrets._secret import Secret

__all__ = ["SecretsManager", "open_secrets"]

_T = TypeVar("_T")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class SecretsManager:
    """Hands out :class:`Secret` values: checked, cached for ``ttl`` seconds, and redacted.

    ``get`` first calls ``allowed(name)``, which raises :class:`~runtime.errors.PermissionDenied`
    when the calling module did not declare the secret; then serves the cached value if it was
    fetched less than ``ttl`` seconds ago on ``clock``; otherwise asks the providers in order.
    Every value handed out is remembered by :attr:`redactor`, which masks it in logs, errors and
    snapshots.

    One manager serves the process; :meth:`scoped` gives each module a view with its own
    capability check over the same cache, providers and redactor.

        >>> import asyncio
        >>> from runtime.secrets import EnvProvider
        >>> manager = SecretsManager([EnvProvider(environ={"MODRPC_SECRET_API": "k"})], ttl=30)
        >>> asyncio.run(manager.get("api"))
        Secret('api', '***')
    """

    def __init__(
        self,
        providers: Sequence[SecretProvider],
        *,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        allowed: Callable[[str], None] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        if ttl < 0:
            raise ValueError(f"ttl must not be negative, got {ttl}")
        self._providers = tuple(providers)
        self._ttl = ttl
        self._clock = clock
        self._allowed = allowed
        self._cache: dict[str, tuple[str, float]] = {}
        self._closed = [False]  # shared with scoped views
        self.redactor = redactor if redactor is not None else Redactor()

    @property
    def providers(self) -> tuple[SecretProvider, ...]:
        return self._providers

    def scoped(self, allowed: Callable[[str], None] | None) -> SecretsManager:
        """A view with capability check ``allowed`` that shares this manager's cache and redactor."""
        view = copy.copy(self)
        view._allowed = allowed
        return view

    async def get(self, name: str) -> Secret:
        """Secret ``name``.

        Raises :class:`~runtime.errors.PermissionDenied` (from ``allowed``) when not declared,
        :class:`~runtime.errors.NotFound` when no provider has it, and
        :class:`~runtime.errors.Unavailable` when a provider cannot be reached. Messages name the
        secret, never its value.
        """
        if not _NAME.match(name):
            raise InvalidArgument(
                f"bad secret name {name!r}: letters, digits, '_', '.' and '-', starting with a "
                "letter or digit, at most 128 characters"
            )
        if self._allowed is not None:
            self._allowed(name)
        if self._closed[0]:
            raise Unavailable(f"secret {name!r} cannot be read: the secrets manager is closed")
        now = self._clock()
        cached = self._cache.get(name)
        if cached is not None and now - cached[1] < self._ttl:
            return Secret(name, cached[0])
        value = await self._fetch(name)
        self.redactor.add(value)
        self._cache[name] = (value, now)
        return Secret(name, value)

    async def _fetch(self, name: str) -> str:
        for provider in self._providers:
            try:
                value = await provider.get(name)
            except Unavailable as exc:
                raise Unavailable(
                    f"secret {name!r} cannot be read: provider {provider.name!r} is unavailable: "
                    f"{exc.message}"
                ) from exc
            except ModrpcError:
                raise
            except Exception as exc:
                # A provider bug or a foreign error that escaped: name its type only.
                raise Unavailable(
                    f"secret {name!r} cannot be read: provider {provider.name!r} failed "
                    f"({type(exc).__name__})"
                ) from exc
            if value is not None:
                return value
        names = ", ".join(p.name for p in self._providers) or "none configured"
        raise NotFound(f"secret {name!r} is not set in any provider ({names})")

    def invalidate(self, name: str | None = None) -> None:
        """Drop ``name`` (or everything) from the cache, so the next ``get`` asks the providers."""
        if name is None:
            self._cache.clear()
        else:
            self._cache.pop(name, None)

    def redact(self, obj: _T) -> _T:
        """A deep copy of JSON-like ``obj`` with every value handed out (and any Secret) masked."""
        return self.redactor.redact(obj)

    def scrub(self, text: str) -> str:
        """``text`` with every value handed out masked."""
        return self.redactor.scrub(text)

    def logging_filter(self) -> RedactingFilter:
        """A log filter that masks the values this manager hands out; attach it to handlers."""
        return RedactingFilter(self.redactor)

    async def close(self) -> None:
        """Close the providers that hold resources. Safe to call twice; later ``get`` fails."""
        if self._closed[0]:
            return
        self._closed[0] = True
        self._cache.clear()
        for provider in self._providers:
            await close_provider(provider)

    async def __aenter__(self) -> SecretsManager:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


def open_secrets(
    settings: SecretsSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    environ: Mapping[str, str] | None = None,
) -> SecretsManager:
    """The process's secrets manager, built from the ``[secrets]`` config.

    >>> from runtime.config import load_settings
    >>> manager = open_secrets(load_settings().secrets)
    """
    env = os.environ if environ is None else environ
    return SecretsManager(providers_from_settings(settings, env), ttl=settings.ttl, clock=clock)
