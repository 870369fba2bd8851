"""Which JWT keys a gateway accepts, decided once from its settings and the address it binds.

The development secret (:data:`~runtime.config.DEV_JWT_SECRET`) is documented, so anyone can
sign with it. It is therefore in force only when nothing else is: no ``auth.jwt_secret``, no
RS256/ES256 key, no JWKS, and HS256 allowed. Configuring keys turns HS256 off unless a secret is
set explicitly, and a gateway that binds anything but a loopback address with the development
secret in force refuses to start, naming the setting to change.

    >>> from runtime.config import load_settings
    >>> jwt_secret_in_force(load_settings())
    JwtSecret(value='modrpc-dev-secret-change-me-in-production', development=True)
"""

from __future__ import annotations

from typing import NamedTuple

from runtime.config import DEV_JWT_SECRET, ConfigError, Settings, is_loopback

__all__ = ["JwtSecret", "check_dev_secret", "jwt_secret_in_force"]


class JwtSecret(NamedTuple):
    """The HS256 secret in force (None: HS256 is off) and whether it is the development one."""

    value: str | None
    development: bool


def jwt_secret_in_force(settings: Settings) -> JwtSecret:
    """The HS256 secret the gateway verifies with, given its settings."""
    auth = settings.auth
    if "HS256" not in auth.jwt_algorithms:
        return JwtSecret(None, False)
    if auth.jwt_secret is not None:
        return JwtSecret(auth.jwt_secret, auth.jwt_secret == DEV_JWT_SECRET)
    if auth.jwt_public_keys or auth.jwks_path is not None:
        return JwtSecret(None, False)  # keys configured: no silent shared secret beside them
    return JwtSecret(DEV_JWT_SECRET, True)


def check_dev_secret(settings: Settings, host: str) -> None:
    """Refuse (ConfigError) a gateway binding a non-loopback ``host`` with the development secret."""
    if jwt_secret_in_force(settings).development and not is_loopback(host):
        raise ConfigError(
            f"the gateway binds {host}, beyond this machine, and would accept tokens signed with the "
            "published development JWT secret: set auth.jwt_secret (MODRPC_AUTH__JWT_SECRET) to a "
            "secret of your own, or configure auth.jwt_public_keys / auth.jwks_path"
        )
