"""Certificates and identities: what a CA issues, how it is written, and what a name means."""

from __future__ import annotations

import datetime
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from runtime.identity import Peer
from runtime.tls import CA_CERT, CA_KEY, CertificateAuthority, KeyPair, TlsError, ensure_identity
from runtime.tls._certs import certificate_names


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("text", "dns"),
    [
        ("gateway", "gateway.modrpc"),
        ("hub", "hub.modrpc"),
        ("module:users", "users.module.modrpc"),
        ("module:order_items", "order_items.module.modrpc"),
        ("client:Ada-1", "Ada-1.client.modrpc"),
    ],
)
def test_an_identity_round_trips_through_its_certificate_name(text: str, dns: str) -> None:
    peer = Peer.parse(text)
    assert str(peer) == text and peer.dns_name == dns
    assert Peer.from_dns_names(["localhost", "127.0.0.1", dns]) == peer


@pytest.mark.parametrize("text", ["root", "module:Users", "module:", "gateway:x", "client:", "client:a b", "client:-x"])
def test_a_malformed_identity_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="identity"):
        Peer.parse(text)


def test_names_that_are_not_exactly_one_identity_name_nobody() -> None:
    assert Peer.from_dns_names(["localhost"]) is None
    assert Peer.from_dns_names(["gateway.modrpc", "users.module.modrpc"]) is None  # two claims: neither
    assert Peer.from_dns_names(["evil.gateway.modrpc"]) is None
    assert Peer.from_dns_names(["x.unknown.modrpc"]) is None


def test_an_issued_certificate_names_its_identity_and_hosts_and_chains_to_the_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    issued = ca.issue(Peer.module("users"), hosts=["10.0.3.7", "users.internal"])
    certificate = x509.load_pem_x509_certificate(issued.certificate)
    assert certificate_names(certificate) == ["users.module.modrpc", "users.internal"]
    addresses = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in addresses.get_values_for_type(x509.IPAddress)] == ["10.0.3.7"]
    certificate.verify_directly_issued_by(ca.certificate)  # raises if it did not


def test_keys_and_certificates_are_written_0600_in_a_0700_folder(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    ca = CertificateAuthority.create()
    ca.save(folder)
    cert, key = ca.issue(Peer.gateway()).save(folder)
    assert mode(folder) == 0o700
    assert mode(folder / CA_KEY) == 0o600 and mode(key) == 0o600
    assert mode(cert) == 0o600 and mode(folder / CA_CERT) == 0o600
    assert not list(folder.glob(".*.crt*")) and not list(folder.glob(".*.key*")), "no temporary files left"


def test_a_development_folder_gets_one_ca_and_every_identity_asked_for(tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    threads = [
        threading.Thread(target=ensure_identity, args=(folder, Peer.module(name)), kwargs={"dev_ca": True})
        for name in ("users", "orders", "inventory", "notifications")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ca = CertificateAuthority.load(folder)
    for name in ("users", "orders", "inventory", "notifications"):
        certificate = x509.load_pem_x509_certificate((folder / f"module-{name}.crt").read_bytes())
        certificate.verify_directly_issued_by(ca.certificate)  # all four from the one CA


def test_a_production_folder_without_the_identity_is_an_error_naming_file_and_command(tmp_path: Path) -> None:
    CertificateAuthority.create().save(tmp_path / "ca")
    (tmp_path / "tls").mkdir()
    with pytest.raises(TlsError, match=r"module-users\.crt.*modrpc certs issue module:users"):
        ensure_identity(tmp_path / "tls", Peer.module("users"), dev_ca=False)


def test_key_pair_files_are_read_again_after_they_change(tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    first = ca.issue(Peer.gateway())
    cert, key = first.save(tmp_path)
    pair = KeyPair(cert, key, tmp_path / CA_CERT)
    before = pair.material()
    assert pair.material() is before and not pair.changed()  # unchanged files are not read again
    second = ca.issue(Peer.gateway(), not_before=datetime.datetime.now(datetime.UTC))
    second.save(tmp_path)
    assert pair.changed()
    after = pair.material()
    assert after.certificate == second.certificate and after.key == second.key


def test_a_key_pair_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match=r"nowhere\.crt: cannot read the certificate"):
        KeyPair(tmp_path / "nowhere.crt", tmp_path / "nowhere.key")


def test_modrpc_certs_makes_a_ca_issues_from_it_and_shows_what_a_folder_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.cli import main

    monkeypatch.chdir(tmp_path)  # no project here: certs needs none
    assert main(["certs", "init", "--dir", "ca"]) == 0
    assert main(["certs", "issue", "module:users", "--ca", "ca", "--out", "host", "--host", "10.0.3.7"]) == 0
    assert main(["certs", "issue", "module:users", "--ca", "ca", "--out", "host"]) == 2  # no silent overwrite
    assert "exists; --force replaces it" in capsys.readouterr().err
    assert main(["certs", "issue", "root", "--ca", "ca", "--out", "host"]) == 2
    assert mode(tmp_path / "host" / "module-users.key") == 0o600 and mode(tmp_path / "ca" / "ca.key") == 0o600
    capsys.readouterr()
    assert main(["certs", "show", "--dir", "host"]) == 0
    shown = capsys.readouterr().out
    assert "module-users.crt" in shown and "module:users" in shown and "valid until" in shown
    ensure_identity(tmp_path / "host", Peer.module("users"), dev_ca=False)  # a production folder: complete


def test_modrpc_token_refuses_when_the_config_accepts_no_hs256_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODRPC_AUTH__JWT_ALGORITHMS", '["RS256"]')
    assert main(["token", "--subject", "ada"]) == 2
    assert "accepts no HS256 token" in capsys.readouterr().err
    monkeypatch.delenv("MODRPC_AUTH__JWT_ALGORITHMS")
    assert main(["token", "--subject", "ada", "--ttl", "30d"]) == 2
    assert "auth.max_token_lifetime" in capsys.readouterr().err
