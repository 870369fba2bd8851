"""TLS material read from files, and read again whenever the files change.

:class:`KeyPair` is one certificate, its key and (optionally) the CA certificate peers must
chain to. It hands out grpc credentials and :mod:`ssl` contexts built from the files as they are
now: a server's grpc credentials ask it again on every TLS handshake
(``grpc.dynamic_ssl_server_credentials``), and an ``ssl`` context is rebuilt when a stat of the
files shows a change, so replacing the files on disk rotates a certificate without a restart.
Calls already connected keep the certificate they were set up with.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["KeyPair", "Material", "TlsError"]

log = logging.getLogger("modrpc.tls")

Stamp = tuple[tuple[int, int, int], ...]


class TlsError(ValueError):
    """TLS files that are missing, unreadable or malformed; the message names the file."""


@dataclass(frozen=True)
class Material:
    """The PEM bytes of a certificate chain, its private key and the trusted CA (if any)."""

    certificate: bytes
    key: bytes
    ca: bytes | None


def _stamp(paths: tuple[Path, ...]) -> Stamp:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append((0, 0, 0))
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from exc
    if b"-----BEGIN" not in data:
        raise TlsError(f"{path}: the {what} is not PEM")
    return data


class KeyPair:
    """A certificate and key on disk (and the CA peers must chain to), re-read on change.

    ``ca`` None: peers are not asked for certificates (a TLS edge without client certificates).
    """

    def __init__(self, cert: Path, key: Path, ca: Path | None = None) -> None:
        self.cert = Path(cert)
        self.key = Path(key)
        self.ca = None if ca is None else Path(ca)
        self._paths = (self.cert, self.key) + ((self.ca,) if self.ca is not None else ())
        self._lock = threading.Lock()  # grpc asks for server credentials from its own threads
        self._stamp: Stamp = ()
        self._material: Material | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}
        self.generation = 0
        """Incremented each time the files are read anew: clients holding connections made with
        an older generation open new ones (see :meth:`current_generation`)."""
        self._next_check = 0.0
        self.material()  # fail now, naming the file, rather than at the first handshake

    def material(self) -> Material:
        """The files' contents as they are now (read again only after they changed)."""
        stamp = _stamp(self._paths)
        with self._lock:
            if self._material is None or stamp != self._stamp:
                material = Material(
                    _read(self.cert, "certificate"),
                    _read(self.key, "private key"),
                    None if self.ca is None else _read(self.ca, "CA certificate"),
                )
                if self._material is not None:
                    log.info("TLS files changed; new connections use %s", self.cert)
                self._material, self._stamp = material, stamp
                self._contexts.clear()
                self.generation += 1
            return self._material

    def current_generation(self, interval: float = 1.0) -> int:
        """The files' generation, looking at them at most every ``interval`` seconds: cheap
        enough for a client to ask on every call. A failed re-read keeps the last good files."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + interval
            if self.changed():
                try:
                    self.material()
                except TlsError as exc:
                    log.warning("keeping the previous certificate: %s", exc)
        return self.generation

    def changed(self) -> bool:
        """Whether the files differ from what was last read."""
        return _stamp(self._paths) != self._stamp

    # -- grpc ------------------------------------------------------------------------------------

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that re-read the files on each handshake when they changed;
        client certificates are required (and verified against ``ca``) when ``ca`` is set."""
        current = self.material()
        seen = [current]

        def configuration(material: Material) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration(
                [(material.key, material.certificate)], root_certificates=material.ca
            )

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            try:
                material = self.material()
            except TlsError as exc:  # half-replaced files: keep serving with the last good ones
                log.warning("keeping the previous certificate: %s", exc)
                return None
            if material is seen[0]:
                return None
            seen[0] = material
            return configuration(material)

        return grpc.dynamic_ssl_server_credentials(
            configuration(current),
            fetch,  # type: ignore[arg-type]  # grpc documents None as "no change"; the stubs forget it
            require_client_authentication=self.ca is not None,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials presenting this certificate and trusting ``ca`` (files as now)."""
        material = self.material()
        return grpc.ssl_channel_credentials(material.ca, material.key, material.certificate)

    # -- ssl (the lane) --------------------------------------------------------------------------

    def server_context(self) -> ssl.SSLContext:
        """An ``ssl`` server context requiring a client certificate that chains to ``ca``."""
        return self._context("server", self._build_server)

    def client_context(self) -> ssl.SSLContext:
        """An ``ssl`` client context presenting this certificate, checking the server's name."""
        return self._context("client", self._build_client)

    def _context(self, role: str, build: Callable[[Material], ssl.SSLContext]) -> ssl.SSLContext:
        material = self.material()
        with self._lock:
            context = self._contexts.get(role)
            if context is None:
                context = self._contexts[role] = build(material)
            return context

    def _load(self, context: ssl.SSLContext, material: Material) -> None:
        # ssl loads chains only from files: these are the files just read (a change in between
        # is caught by the next stamp, since their stamp is taken before reading).
        context.load_cert_chain(self.cert, self.key)
        if material.ca is not None:
            context.load_verify_locations(cadata=material.ca.decode())

    def _build_server(self, material: Material) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load(context, material)
        context.verify_mode = ssl.CERT_REQUIRED if material.ca is not None else ssl.CERT_NONE
        return context

    def _build_client(self, material: Material) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load(context, material)
        return context
