"""Choosing a fabric backend from a URL (``MODRPC_FABRIC_URL``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from runtime.config import mask_url
from runtime.errors import InvalidArgument
from runtime.fabric._hub import HubFabric
from runtime.fabric._memory import MemoryFabric
from runtime.fabric._nats import NatsFabric
from runtime.fabric._types import Fabric, FabricOptions, MemoryOptions, NatsOptions
from runtime.tls import InternalTls

__all__ = ["open_fabric"]


def open_fabric(url: str, *, tls: InternalTls | None = None, **options: object) -> Fabric:
    """The fabric for ``url``, not yet started: use it with ``async with`` or ``start()``.

    ``memory://`` is the embedded default (one broker per call); ``nats://host:port`` (several
    servers comma-separated) is NATS JetStream, and ``tls://host:port`` the same over mutual TLS
    as ``tls`` (the process's deployment identity; the server's certificate checked against the
    deployment CA and the host it is reached by); ``hub://host:port`` is ``modrpc up``'s shared
    memory fabric, reached over mutual TLS as ``tls``. ``options`` are the fields of
    :class:`MemoryOptions` or :class:`NatsOptions`; an unknown one is an error.

    >>> fabric = open_fabric("memory://", capacity=1_000, backpressure="refuse")
    """
    try:
        scheme = urlsplit(url.split(",", 1)[0].strip()).scheme.lower()
    except ValueError as exc:
        raise InvalidArgument(f"unparsable fabric URL {mask_url(url)!r}") from exc
    if scheme == "memory":
        return MemoryFabric(MemoryOptions.build(options))
    if scheme == "hub":  # the supervisor's memory fabric, shared by its worker processes
        return HubFabric(url, FabricOptions.build(options), tls=tls)
    if scheme in ("nats", "tls"):
        # tls://: the process presents its deployment identity and checks the server's
        # certificate against the deployment CA, as on every other internal hop.
        context = tls.client_context() if scheme == "tls" and tls is not None else None
        return NatsFabric(url, NatsOptions.build(options), tls=context)
    raise InvalidArgument(
        f"unknown fabric URL scheme {scheme!r} in {mask_url(url)!r}: use memory://, nats://host:port or hub://host:port"
    )
