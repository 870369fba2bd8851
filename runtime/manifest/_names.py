"""Names the manifest layer agrees on: module and method names, gRPC service paths, topics.

A module ``order_items`` is served as the gRPC service ``order_items.v1.OrderItemsService``; its
method ``AddItem`` has the path ``/order_items.v1.OrderItemsService/AddItem``. The package
suffix stays ``v1`` for every module version because versions are chosen by ``x-api-version``,
not by package name, so a client's method path never changes across versions.

    >>> method_path("order_items", "AddItem")
    '/order_items.v1.OrderItemsService/AddItem'
"""

from __future__ import annotations

import re

# A module's wire names (package, service, method path) belong to runtime.wire; manifests record
# them, so they are re-exported here rather than written twice.
from runtime.wire import method_path, package_name, pascal, service_name

__all__ = [
    "HOOK_TARGET",
    "METHOD_NAME",
    "MODULE_NAME",
    "is_topic_pattern",
    "method_path",
    "package_name",
    "pascal",
    "service_name",
    "topic_covers",
]

MODULE_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
"""lower_snake_case: a module name doubles as a folder, a Python package and a proto package."""

METHOD_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")
"""PascalCase, as gRPC method names are written."""

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
HOOK_TARGET = re.compile(rf"\.?{_IDENT}(?:\.{_IDENT})*:{_IDENT}(?:\.{_IDENT})*")
"""``package.module:function`` (the part after the colon may be a dotted attribute path); a
leading dot (``.hooks:fn``) names a module inside the module's own package."""

_TOPIC_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def is_topic_pattern(topic: str) -> bool:
    """True when ``topic`` is a NATS-style subject, possibly with wildcards.

    Tokens are separated by ``.`` and are non-empty. ``*`` stands for exactly one token and
    ``>`` for one or more trailing tokens, so ``>`` may only be the last token.
    """
    tokens = topic.split(".")
    for i, token in enumerate(tokens):
        if token == "*":
            continue
        if token == ">":
            if i != len(tokens) - 1:
                return False
            continue
        if not _TOPIC_TOKEN.fullmatch(token):
            return False
    return True


def topic_covers(pattern: str, topic: str) -> bool:
    """True when every subject matched by ``topic`` is also matched by ``pattern``.

    For a concrete topic this is ordinary NATS matching. A wildcard ``topic`` (a subscription
    such as ``orders.*``) is covered only by a pattern at least as wide, so declaring
    ``orders.created`` does not allow subscribing to ``orders.*``.
    """
    want = pattern.split(".")
    have = topic.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or have[i] == ">":
            return False
        if token != "*" and token != have[i]:
            return False
    return len(want) == len(have)
