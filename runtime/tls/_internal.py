"""This process's identity inside the deployment, and the identity of whoever calls it.

Every hop between runtime processes is mutual TLS with certificates from the deployment's CA:
:class:`InternalTls` is one process's side of it (its certificate and key, and the CA it trusts),
found in the TLS folder (``tls.dir``, default ``.modrpc/tls``) by the identity's file names.

With ``tls.dev_ca`` on (the default), a folder that has no CA gets a new development CA, and an
identity missing from a folder that holds the CA's key is issued on the spot: that is how
``modrpc up`` is secure with no configuration. In production the folder holds ``ca.crt`` and
the identities of that host only (``modrpc certs issue``), and a missing one is an error naming
the file and the command that makes it.

On the serving side the caller's identity is read from its certificate: per call from grpc
(:func:`peer_of_grpc`), per connection on the lane (:func:`peer_of_ssl`).
"""

from __future__ import annotations

import fcntl
import logging
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from runtime.identity import Peer
from runtime.tls._certs import CA_CERT, CA_KEY, CertificateAuthority, private_dir
from runtime.tls._files import KeyPair, TlsError

__all__ = ["DEV_HOSTS", "InternalTls", "ensure_identity", "peer_of_grpc", "peer_of_ssl"]

log = logging.getLogger("modrpc.tls")

DEV_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Names a development certificate also carries, so grpcurl can check the address it dialled."""


def ensure_identity(directory: Path, peer: Peer, *, dev_ca: bool, hosts: Sequence[str] = DEV_HOSTS) -> None:
    """Make sure ``directory`` holds the CA certificate and ``peer``'s certificate and key.

    With ``dev_ca``, a missing CA is created (a development CA) and a missing identity is issued
    from the CA key in the folder. Processes starting side by side take turns (a lock file), so
    they all end up with one CA. Raises :class:`TlsError` naming what is missing otherwise.
    """
    cert = directory / f"{peer.file_stem}.crt"
    key = directory / f"{peer.file_stem}.key"
    if (directory / CA_CERT).is_file() and cert.is_file() and key.is_file():
        return
    if not dev_ca:
        missing = [p for p in (directory / CA_CERT, cert, key) if not p.is_file()]
        raise TlsError(
            f"no {' or '.join(str(p) for p in missing)}: {peer} needs its certificate from the deployment CA "
            f"(`modrpc certs issue {peer} --ca DIR --out {directory}`), or set tls.dev_ca = true for development"
        )
    private_dir(directory)
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (directory / CA_CERT).is_file():
                if (directory / CA_KEY).exists():
                    raise TlsError(f"{directory / CA_KEY} exists without {CA_CERT}; remove it or restore {CA_CERT}")
                CertificateAuthority.create().save(directory)
                log.warning("created a development CA in %s (tls.dev_ca); use your own CA in production", directory)
            if not (cert.is_file() and key.is_file()):
                try:
                    ca = CertificateAuthority.load(directory)
                except FileNotFoundError as exc:
                    raise TlsError(
                        f"{cert} is missing and {directory} has no CA key to issue it: run "
                        f"`modrpc certs issue {peer}` with the deployment CA"
                    ) from exc
                ca.issue(peer, hosts=hosts).save(directory)
                log.info("issued a development certificate for %s in %s", peer, directory)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class InternalTls:
    """One process's identity for mutual TLS with the rest of the runtime.

        tls = InternalTls.load(Path(".modrpc/tls"), Peer.module("users"), dev_ca=True)
        server.add_secure_port("127.0.0.1:0", tls.server_credentials())
        channel = grpc.aio.secure_channel(address, tls.channel_credentials(),
                                          options=tls.channel_options(Peer.module("orders")))
    """

    def __init__(self, peer: Peer, keys: KeyPair) -> None:
        self.peer = peer
        self.keys = keys

    @classmethod
    def load(cls, directory: Path, peer: Peer, *, dev_ca: bool = False) -> InternalTls:
        directory = Path(directory)
        ensure_identity(directory, peer, dev_ca=dev_ca)
        keys = KeyPair(directory / f"{peer.file_stem}.crt", directory / f"{peer.file_stem}.key", directory / CA_CERT)
        return cls(peer, keys)

    @property
    def ca_file(self) -> Path:
        assert self.keys.ca is not None
        return self.keys.ca

    def server_credentials(self) -> grpc.ServerCredentials:
        """grpc server credentials: this certificate; client certificates from the CA required."""
        return self.keys.server_credentials()

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return self.keys.channel_credentials()

    @staticmethod
    def channel_options(server: Peer) -> list[tuple[str, str]]:
        """Channel options that make grpc check the server holds ``server``'s certificate."""
        return [("grpc.ssl_target_name_override", server.dns_name)]

    def server_context(self) -> ssl.SSLContext:
        return self.keys.server_context()

    def client_context(self) -> ssl.SSLContext:
        return self.keys.client_context()


def peer_of_grpc(context: grpc.aio.ServicerContext[Any, Any]) -> Peer | None:
    """The identity in the caller's certificate on a grpc call; None without one."""
    names = context.peer_identities()
    if not names:
        return None
    return _peer_of_names(tuple(names))


def peer_of_ssl(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Peer | None:
    """The identity in the peer's certificate on an ``ssl`` connection; None without one."""
    if ssl_object is None:
        return None
    certificate = ssl_object.getpeercert()
    if not certificate:
        return None
    alternatives: Any = certificate.get("subjectAltName", ())  # ((kind, value), ...)
    names = tuple(str(value).encode() for kind, value in alternatives if kind == "DNS")
    return _peer_of_names(names)


_KNOWN: dict[tuple[bytes, ...], Peer | None] = {}


def _peer_of_names(names: tuple[bytes, ...]) -> Peer | None:
    """Parsed once per distinct set of names (a worker sees the same few callers)."""
    try:
        return _KNOWN[names]
    except KeyError:
        pass
    peer = Peer.from_dns_names(name.decode(errors="replace") for name in names)
    if len(_KNOWN) >= 1024:
        _KNOWN.clear()
    _KNOWN[names] = peer
    return peer
