"""``modrpc certs``: the certificates of a deployment's internal mutual TLS (and of its edge).

    modrpc certs init --dir ca/                      # a CA: ca/ca.crt and ca/ca.key (keep it offline)
    modrpc certs issue gateway --ca ca/ --out tls/   # tls/gateway.crt, .key, and ca.crt
    modrpc certs issue module:users --ca ca/ --out tls/ --host 10.0.3.7
    modrpc certs issue client:ada --ca ca/ --out ada/
    modrpc certs show --dir tls/                     # what a folder holds, and until when

An identity is ``gateway``, ``hub``, ``module:<name>`` or ``client:<name>``; its certificate
names it, and ``--host`` adds names or addresses for clients that check the address they
dialled (grpcurl, or callers of the gateway's edge). Private keys are written 0600 in 0700
folders; an existing certificate is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    from runtime.identity import Peer
    from runtime.tls import CA_CERT, CertificateAuthority

    try:
        if args.action == "init":
            directory = Path(args.dir)
            if (directory / CA_CERT).exists() and not args.force:
                print(f"modrpc certs: {directory / CA_CERT} exists; --force replaces it", file=sys.stderr)
                return 2
            CertificateAuthority.create(args.name, days=args.days).save(directory)
            print(f"CA written to {directory / CA_CERT} and {directory / 'ca.key'} (keep the key offline)")
            return 0
        if args.action == "issue":
            peer = Peer.parse(args.identity)
            ca = CertificateAuthority.load(Path(args.ca))
            out = Path(args.out)
            if (out / f"{peer.file_stem}.crt").exists() and not args.force:
                print(f"modrpc certs: {out / (peer.file_stem + '.crt')} exists; --force replaces it", file=sys.stderr)
                return 2
            cert, key = ca.issue(peer, hosts=args.host, days=args.days).save(out)
            print(f"{peer}: {cert} and {key}")
            return 0
        return _show(Path(args.dir))
    except (OSError, ValueError) as exc:
        print(f"modrpc certs: {exc}", file=sys.stderr)
        return 2


def _show(directory: Path) -> int:
    from cryptography import x509

    from runtime.identity import Peer
    from runtime.tls._certs import certificate_names

    found = sorted(directory.glob("*.crt"))
    if not found:
        print(f"modrpc certs: no certificates in {directory}", file=sys.stderr)
        return 1
    now = datetime.datetime.now(datetime.UTC)
    for path in found:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
        names = certificate_names(certificate)
        peer = Peer.from_dns_names(names)
        until = certificate.not_valid_after_utc
        state = "EXPIRED" if until < now else f"valid until {until:%Y-%m-%d}"
        who = str(peer) if peer is not None else ("CA" if path.name == "ca.crt" else ", ".join(names) or "-")
        print(f"{path.name:32} {who:28} {state}")
    return 0
