"""``modrpc token --subject S --roles a,b [--ttl 1h]``: a JWT the running dev config accepts.

It is signed HS256 with the secret the gateway of the same config verifies with (``auth.jwt_secret``,
or the development secret while no other key is configured), with the configured issuer and
audience, so that gateway accepts it. Use it only in development. A config with HS256 off (keys
configured, no secret) has nothing to sign with, and says so; a ``--ttl`` beyond
``auth.max_token_lifetime`` would be refused by the gateway, so it is refused here.
"""

from __future__ import annotations

import argparse
import re
import sys

from runtime.config import ConfigError, load_settings

__all__ = ["parse_ttl", "run"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """``90`` → 90 s; ``15m``, ``1h``, ``7d``. Anything else raises ``ValueError``."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"--ttl {text!r}: expected a positive number of seconds, or N with s, m, h or d")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def run(args: argparse.Namespace) -> int:
    from runtime.gateway import issue_dev_token, jwt_secret_in_force

    try:
        settings = load_settings(args.config)
        ttl = parse_ttl(args.ttl)
    except (ConfigError, ValueError) as exc:
        print(f"modrpc token: {exc}", file=sys.stderr)
        return 2
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    auth = settings.auth
    secret = jwt_secret_in_force(settings).value
    if secret is None:
        print(
            "modrpc token: this configuration accepts no HS256 token (RS256/ES256 keys are configured "
            "and auth.jwt_secret is not set): sign tokens with your own key instead",
            file=sys.stderr,
        )
        return 2
    if ttl > auth.max_token_lifetime:
        print(
            f"modrpc token: --ttl {args.ttl} is longer than auth.max_token_lifetime "
            f"({auth.max_token_lifetime:g}s); the gateway would refuse the token",
            file=sys.stderr,
        )
        return 2
    print(
        issue_dev_token(
            secret,
            subject=args.subject,
            roles=roles,
            ttl_seconds=ttl,
            issuer=auth.issuer,
            audience=auth.audience,
        )
    )
    return 0
