"""TLS for the gateway's edge and mutual TLS between runtime processes.

Certificates of the runtime's identities (:class:`~runtime.identity.Peer`) and the CA that
issues them (:class:`CertificateAuthority`), files re-read when they change (:class:`KeyPair`),
and one process's side of the internal mutual TLS (:class:`InternalTls`). See the README's
"Security" section for the trust model.
"""

from runtime.tls._certs import CA_CERT, CA_KEY, CertificateAuthority
from runtime.tls._files import KeyPair, TlsError
from runtime.tls._internal import InternalTls, ensure_identity, peer_of_grpc, peer_of_ssl

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CertificateAuthority",
    "InternalTls",
    "KeyPair",
    "TlsError",
    "ensure_identity",
    "peer_of_grpc",
    "peer_of_ssl",
]
