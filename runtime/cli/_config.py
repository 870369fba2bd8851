"""``modrpc config``: every setting in effect, and where each value came from.

    KEY                     VALUE                  FROM
    gateway_port            50051                  default
    store_url               postgresql://…         MODRPC_STORE_URL
    auth.issuer             acme                   modrpc.toml
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from runtime.config import DEV_JWT_SECRET, ConfigError, mask_url, setting_sources, settings_table

__all__ = ["run"]

_MASKED = frozenset({"auth.jwt_secret"})


def _shown(key: str, value: Any) -> str:
    if key in _MASKED:
        return "(the development secret)" if value == DEV_JWT_SECRET else "***"
    if isinstance(value, Mapping):
        return "{" + ", ".join(sorted(str(k) for k in value)) + "}" if value else "{}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "-"
    if value is None:
        return "-"
    return mask_url(str(value)) if "://" in str(value) else str(value)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "markdown", False):
        sys.stdout.write(settings_table())
        return 0
    try:
        rows = setting_sources(args.config)
    except ConfigError as exc:
        print(f"modrpc config: {exc}", file=sys.stderr)
        return 2
    print(f"project {args.project}")
    width = max(len(key) for key, _, _ in rows) + 2
    shown = [(key, _shown(key, value), source) for key, value, source in rows]
    value_width = min(max(len(v) for _, v, _ in shown) + 2, 48)
    print(f"{'KEY':<{width}}{'VALUE':<{value_width}}FROM")
    for key, value, source in shown:
        print(f"{key:<{width}}{value:<{value_width}}{source}")
    return 0
