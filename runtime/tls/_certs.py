"""Certificates: a CA, and the identities it issues (``modrpc certs``, and ``modrpc up``'s
development CA).

Keys are EC P-256; certificates are X.509 v3 with the identity's DNS name (see
:mod:`runtime.tls._names`) and any extra host names or addresses asked for. Private keys are
written with mode 0600 in folders of mode 0700, atomically (a reader never sees half a file),
and never overwritten by accident.

    ca = CertificateAuthority.create("modrpc development CA")
    ca.save(Path(".modrpc/tls"))
    ca.issue(Peer.module("users")).save(Path(".modrpc/tls"))
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runtime.identity import Peer

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CertificateAuthority",
    "IssuedCertificate",
    "certificate_names",
    "private_dir",
    "write_private",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
DEFAULT_DAYS = 365
CA_DAYS = 3650


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed, mode 0700. A folder that exists already is
    left as it is: it may be one the operator chose and shares (the keys in it are 0600)."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    return path


def write_private(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with ``mode`` (0600: only this user may read it)."""
    private_dir(path.parent)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def certificate_names(certificate: x509.Certificate) -> list[str]:
    """The DNS names of a certificate's subject-alternative-name extension."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(extension.value.get_values_for_type(x509.DNSName))


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its private key, PEM-encoded, with the CA certificate that issued it."""

    peer: Peer
    certificate: bytes
    key: bytes
    ca_certificate: bytes

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write ``<stem>.crt`` and ``<stem>.key`` into ``directory``, and ``ca.crt`` when it
        is not there yet, all 0600 (an operator who wants certificates readable by others
        widens them); returns the certificate and key paths."""
        private_dir(directory)
        cert_path = directory / f"{self.peer.file_stem}.crt"
        key_path = directory / f"{self.peer.file_stem}.key"
        # The key first: a reader that finds the new certificate finds its key too.
        write_private(key_path, self.key)
        write_private(cert_path, self.certificate)
        ca_path = directory / CA_CERT
        if not ca_path.exists():
            write_private(ca_path, self.ca_certificate)
        return cert_path, key_path


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


class CertificateAuthority:
    """A CA certificate and its private key: the root of a deployment's internal trust."""

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.certificate = certificate
        self.key = key

    @classmethod
    def create(cls, common_name: str = "modrpc development CA", *, days: int = CA_DAYS) -> CertificateAuthority:
        """A new self-signed CA (EC P-256), valid from now for ``days`` days."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """The CA in ``directory`` (``ca.crt`` and ``ca.key``); FileNotFoundError naming what is missing."""
        cert_path, key_path = directory / CA_CERT, directory / CA_KEY
        for path in (cert_path, key_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file (the CA needs {CA_CERT} and {CA_KEY})")
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: expected an EC private key")
        return cls(certificate, key)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def save(self, directory: Path) -> None:
        """Write ``ca.crt`` and ``ca.key`` (0600) into ``directory`` (made 0700)."""
        write_private(directory / CA_KEY, _key_pem(self.key))
        write_private(directory / CA_CERT, self.certificate_pem)

    def issue(
        self,
        peer: Peer,
        *,
        hosts: Sequence[str] = (),
        days: float = DEFAULT_DAYS,
        not_before: datetime.datetime | None = None,
    ) -> IssuedCertificate:
        """A certificate for ``peer``, usable as a TLS server and client, valid ``days`` days.

        ``hosts`` adds DNS names or IP addresses for clients that check the address they
        dialled (grpcurl, or a caller of the gateway's edge). ``not_before`` (default: now)
        lets a test make a certificate that has already expired.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or _now() - datetime.timedelta(minutes=5)
        names: list[x509.GeneralName] = [x509.DNSName(peer.dns_name)]
        names += [_host_name(host) for host in dict.fromkeys(hosts) if host]
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, peer.name or peer.kind)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return IssuedCertificate(
            peer, certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key), self.certificate_pem
        )
