"""How a module and its versions are named on the wire and on disk.

One gRPC service per module, stable across its dated versions: ``users.v1.UsersService``. The
``v1`` is the protobuf package's major version; the dated Timescape versions travel in the
``x-api-version`` header, Stripe style, so a client never changes the method path it calls.
"""

from __future__ import annotations

import re

__all__ = [
    "SANDBOX_SERVICE",
    "file_name",
    "handler_id_of",
    "method_path",
    "package_name",
    "pascal",
    "request_message",
    "response_message",
    "service_name",
    "snake",
    "version_segment",
]

_VERSION_CHARS = re.compile(r"[^0-9A-Za-z]+")

SANDBOX_SERVICE = "modrpc.playground.v1.Sandbox"
"""The gRPC service on a worker that replays stored snapshots for the playground (``Replay``,
``Diff``, ``PlayHook``; JSON in and out), registered only while the playground is on."""


def pascal(name: str) -> str:
    """``create_user`` → ``CreateUser``; already-Pascal names are kept."""
    if "_" not in name and name[:1].isupper():
        return name
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def snake(name: str) -> str:
    """``CreateUser`` → ``create_user``; ``HTTPServer`` → ``http_server``."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    return s.lower()


def package_name(module: str) -> str:
    return f"{module}.v1"


def service_name(module: str) -> str:
    """The fully qualified service name: ``users.v1.UsersService``."""
    return f"{package_name(module)}.{pascal(module)}Service"


def method_path(module: str, method: str) -> str:
    """The gRPC method path: ``/users.v1.UsersService/CreateUser``."""
    return f"/{service_name(module)}/{method}"


def handler_id_of(path: str) -> str | None:
    """The handler id (``users.GetUser``) of a module's method path, for spans and logs.

    ``/users.v1.UsersService/GetUser`` names module ``users``; paths of other services (health,
    reflection) give None.
    """
    service, _, method = path.lstrip("/").partition("/")
    module = service.partition(".")[0]
    return f"{module}.{method}" if method and service == service_name(module) else None


def file_name(module: str) -> str:
    """The .proto file name inside a version's root: ``users/v1/users.proto``."""
    return f"{module}/v1/{module}.proto"


def request_message(method: str) -> str:
    return f"{method}Request"


def response_message(method: str) -> str:
    return f"{method}Response"


def version_segment(version_id: str) -> str:
    """A version id as a Python package name: ``2025-01-15`` → ``v2025_01_15``."""
    return "v" + _VERSION_CHARS.sub("_", version_id.removeprefix("tsv:")).strip("_")
