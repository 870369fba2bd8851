"""Secrets: values reached only through ``gctx.secrets``, cached briefly, never leaked.

Providers (environment, a locked-down directory, optionally Vault) are asked in order by a
:class:`SecretsManager`, which checks the caller's capability, caches values for a short TTL and
remembers every value it hands out so :class:`Redactor` / :class:`RedactingFilter` can mask it in
logs, error messages and snapshots.

    >>> import asyncio
    >>> manager = SecretsManager([EnvProvider(environ={"MODRPC_SECRET_TOKEN": "s3cr3t"})], ttl=30)
    >>> secret = asyncio.run(manager.get("token"))
    >>> secret, secret.reveal()
    (Secret('token', '***'), 's3cr3t')
    >>> manager.redact({"note": "token is s3cr3t"})
    {'note': 'token is ***'}
"""

from runtime.secrets._manager import SecretsManager, open_secrets
from runtime.secrets._providers import SecretProvider
from runtime.secrets._redact import RedactingFilter
from runtime.secrets._secret import Secret

__all__ = [
    "RedactingFilter",
    "Secret",
    "SecretProvider",
    "SecretsManager",
    "open_secrets",
]
