"""``modrpc token --subject S --roles a,b [--ttl 1h]``: a JWT the running dev config accepts.

It is signed HS256 with ``auth.jwt_secret`` and carries the configured issuer and audience, so
the gateway started from the same config accepts it. Use it only in development.
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
    from runtime.gateway import issue_dev_token

    try:
        settings = load_settings(args.config)
        ttl = parse_ttl(args.ttl)
    except (ConfigError, ValueError) as exc:
        print(f"modrpc token: {exc}", file=sys.stderr)
        return 2
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    auth = settings.auth
    print(
        issue_dev_token(
            auth.jwt_secret,
            subject=args.subject,
            roles=roles,
            ttl_seconds=ttl,
            issuer=auth.issuer,
            audience=auth.audience,
        )
    )
    return 0
