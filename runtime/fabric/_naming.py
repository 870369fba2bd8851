"""Pure naming rules for the NATS backend: subjects, stream and consumer names, safe URLs.

JetStream names may not contain ``.``, ``*``, ``>``, whitespace or path separators, and two
topics must never share a stream. So a name keeps a readable, sanitised form of the topic and
adds a short hash of the exact topic, which keeps ``a.b`` and ``a_b`` apart.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["consumer_name", "stream_name", "subject"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_READABLE = 40


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text)[:_READABLE]


def _digest(text: str) -> str:
    return hashlib.blake2s(text.encode(), digest_size=4).hexdigest()


def subject(prefix: str, topic: str) -> str:
    """The NATS subject a topic is published on: ``<prefix>.<topic>``."""
    return f"{prefix}.{topic}"


def stream_name(prefix: str, topic: str) -> str:
    """The stream holding one topic: ``<prefix>_<topic, sanitised>_<hash>``."""
    return f"{prefix}_{_safe(topic)}_{_digest(topic)}"


def consumer_name(group: str) -> str:
    """The durable consumer of a group: ``<group, sanitised>_<hash>``."""
    return f"{_safe(group)}_{_digest(group)}"
