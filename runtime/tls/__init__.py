"""TLS for the gateway's edge and mutual TLS between runtime processes.

Certificates and identities (:class:`Peer`, :class:`CertificateAuthority`), files re-read when
they change (:class:`KeyPair`), and one process's side of the internal mutual TLS
(:class:`InternalTls`). See the README's "Security" section for the trust model.
"""

from runtime.identity import Peer
from runtime.tls._certs import CA_CERT, CA_KEY, CertificateAuthority, IssuedCertificate
from runtime.tls._files import KeyPair, TlsError
from runtime.tls._internal import DEV_HOSTS, InternalTls, ensure_identity, peer_of_grpc, peer_of_ssl

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "DEV_HOSTS",
    "CertificateAuthority",
    "InternalTls",
    "IssuedCertificate",
    "KeyPair",
    "Peer",
    "TlsError",
    "ensure_identity",
    "peer_of_grpc",
    "peer_of_ssl",
]
