"""Request ids: generating unique ones and recognising well-formed ones from callers.

The ingress keeps a caller's ``x-request-id`` when it is well formed and generates one otherwise;
both rules live here so the gateway and the request lifecycle agree on what "well formed" means.

    >>> is_valid_request_id(new_request_id())
    True
    >>> is_valid_request_id("has space")
    False
"""

from __future__ import annotations

import os
import re

__all__ = ["is_valid_request_id", "new_request_id"]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    """A fresh, unique request id: 32 lower-case hex digits, 128 random bits.

    The same shape as ``uuid.uuid4().hex`` (which also draws on ``os.urandom``), without
    building a UUID object on every call.
    """
    return os.urandom(16).hex()


def is_valid_request_id(value: object) -> bool:
    """True iff ``value`` is a string of 1 to 128 characters from ``[A-Za-z0-9._:-]``.

    The alphabet is narrow on purpose: a caller-supplied id ends up in logs, metrics labels and
    response metadata, so it must not carry spaces, quotes or control characters.
    """
    return isinstance(value, str) and _REQUEST_ID.fullmatch(value) is not None
