"""Backend URLs as messages and logs may show them: with every password masked.

Store, fabric and rate-limit URLs carry credentials (``postgresql://app:s3cret@db/modrpc``,
``nats://token@nats:4222``, ``redis://:pw@cache/0``, ``...?password=s3cret``), and all of them end
up in error messages, logs and ``modrpc config``. This is the one place that masks them.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["mask_url"]

_MASK = "***"
_TOKEN_SCHEMES = frozenset({"nats", "tls"})
"""Schemes whose bare user info is a token rather than a user name."""


def mask_url(url: str) -> str:
    """``url`` with any password, bare token or ``password=`` option replaced by ``***``.

    Only the secret changes: the rest is kept byte for byte (``urlunsplit`` would turn
    ``sqlite:////abs/path`` into ``sqlite://abs/path``). A comma-separated list of servers
    (NATS) is masked server by server, and comes back without the spaces around its commas.

        >>> mask_url("postgresql://app:s3cret@db:5432/modrpc?password=s3cret")
        'postgresql://app:***@db:5432/modrpc?password=***'
        >>> mask_url("nats://tok3n@a:4222,nats://b:4222")
        'nats://***@a:4222,nats://b:4222'
    """
    return ",".join(_mask_one(part.strip()) for part in url.split(","))


def _mask_one(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    masked = url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        if colon:
            safe = f"{user}:{_MASK}"
        elif parts.scheme in _TOKEN_SCHEMES:
            safe = _MASK  # nats://<token>@host: the whole user info is the secret
        else:
            safe = user  # postgresql://postgres@host: a user name, nothing secret
        masked = masked.replace(f"//{parts.netloc}", f"//{safe}@{hostport}", 1)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(key == "password" for key, _ in pairs):
            query = urlencode([(k, _MASK if k == "password" else v) for k, v in pairs], safe="*")
            masked = masked.replace(f"?{parts.query}", f"?{query}", 1)
    return masked
