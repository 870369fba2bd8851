"""No development secret in production, and credentials that are unambiguous and bounded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runtime.config import DEV_JWT_SECRET, ConfigError, is_loopback, load_settings
from runtime.errors import Unauthenticated
from runtime.gateway import (
    authenticator_from_settings,
    hash_api_key,
    issue_dev_token,
    jwt_secret_in_force,
)
from runtime.gateway._auth import Authenticator, check_single_credentials
from runtime.gateway._keys import check_dev_secret

OWN_SECRET = "an-operator-chosen-secret-of-32-bytes-or-more"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("MODRPC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_public(key: rsa.RSAPrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


def dev_token(secret: str = DEV_JWT_SECRET, **extra: Any) -> str:
    return issue_dev_token(
        secret, subject="mallory", roles=["admin"], ttl_seconds=600, issuer="modrpc-dev", audience="modrpc", **extra
    )


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("gateway.example.com", False)],
)  # fmt: skip
def test_loopback_is_the_loopback_addresses_and_localhost_only(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_development_secret_is_in_force_only_while_nothing_else_is(tmp_path: Path, rsa_key: Any) -> None:
    assert jwt_secret_in_force(load_settings()) == (DEV_JWT_SECRET, True)
    assert jwt_secret_in_force(load_settings(auth={"jwt_secret": OWN_SECRET})) == (OWN_SECRET, False)
    keys = {"jwt_public_keys": [write_public(rsa_key, tmp_path / "rs.pem")]}
    assert jwt_secret_in_force(load_settings(auth=keys)) == (None, False)
    assert jwt_secret_in_force(load_settings(auth={**keys, "jwt_secret": OWN_SECRET})) == (OWN_SECRET, False)
    assert jwt_secret_in_force(load_settings(auth={"jwt_algorithms": ["RS256"]})) == (None, False)


def test_an_rs256_only_gateway_refuses_a_token_signed_with_the_development_secret(
    tmp_path: Path, rsa_key: Any
) -> None:
    settings = load_settings(auth={"jwt_public_keys": [write_public(rsa_key, tmp_path / "rs.pem")]})
    auth = authenticator_from_settings(settings)
    with pytest.raises(Unauthenticated, match="no key configured for token algorithm 'HS256'"):
        auth.authenticate(bearer(dev_token()), public=False)
    now = int(time.time())
    good = jwt.encode(
        {"sub": "ada", "roles": [], "iss": "modrpc-dev", "aud": "modrpc", "nbf": now, "iat": now, "exp": now + 60},
        rsa_key, algorithm="RS256",
    )  # fmt: skip
    assert auth.authenticate(bearer(good), public=False).subject == "ada"
    assert auth.describe()[0].startswith("RS256 with keys spki:")


def test_a_gateway_beyond_loopback_with_the_development_secret_refuses_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"binds 0\.0\.0\.0.*MODRPC_AUTH__JWT_SECRET"):
        check_dev_secret(load_settings(), "0.0.0.0")
    with pytest.raises(ConfigError, match="MODRPC_AUTH__JWT_SECRET"):  # set explicitly: no better
        check_dev_secret(load_settings(auth={"jwt_secret": DEV_JWT_SECRET}), "10.1.2.3")
    check_dev_secret(load_settings(), "127.0.0.1")
    check_dev_secret(load_settings(auth={"jwt_secret": OWN_SECRET}), "0.0.0.0")


def test_the_start_up_description_names_algorithms_and_key_ids_never_keys() -> None:
    described = authenticator_from_settings(load_settings()).describe()
    assert described == ["HS256 with the development secret (loopback only)"]
    assert DEV_JWT_SECRET not in " ".join(described)


@pytest.mark.parametrize("key", ["authorization", "x-api-key"])
def test_a_credential_header_sent_twice_is_refused_not_last_wins(key: str) -> None:
    with pytest.raises(Unauthenticated, match=f"more than one '{key}' header"):
        check_single_credentials([(key, "Bearer a"), ("x-request-id", "r"), (key, "Bearer b")])
    check_single_credentials([("authorization", "Bearer a"), ("x-api-key", "k")])


def authenticator(**kwargs: Any) -> Authenticator:
    return Authenticator(
        hs256_secret=OWN_SECRET, issuer="modrpc-dev", audience="modrpc",
        api_keys={"ops": (hash_api_key("k-ops"), "ops", ("admin",)), "ada": (hash_api_key("k-ada"), "ada", ())},
        **kwargs,
    )  # fmt: skip


def test_a_bearer_token_and_an_api_key_naming_different_callers_are_refused() -> None:
    auth = authenticator()
    token = issue_dev_token(OWN_SECRET, subject="ada", roles=[], ttl_seconds=60, issuer="modrpc-dev", audience="modrpc")
    with pytest.raises(Unauthenticated, match="name different callers"):
        auth.authenticate({**bearer(token), "x-api-key": "k-ops"}, public=False)
    assert auth.authenticate({**bearer(token), "x-api-key": "k-ada"}, public=False).subject == "ada"
    with pytest.raises(Unauthenticated, match="unknown API key"):  # a bad second credential is no excuse
        auth.authenticate({**bearer(token), "x-api-key": "nope"}, public=False)


def test_a_token_living_longer_than_the_maximum_is_refused() -> None:
    auth = authenticator(max_lifetime=3600)
    now = time.time()
    long_lived = issue_dev_token(
        OWN_SECRET, subject="ada", roles=[], ttl_seconds=10 * 365 * 86400, issuer="modrpc-dev", audience="modrpc"
    )
    with pytest.raises(Unauthenticated, match=r"token lifetime of \d+s exceeds the gateway's maximum of 3600s"):
        auth.authenticate(bearer(long_lived), public=False)
    # issued long ago with a short life left: what counts is exp - iat
    old = issue_dev_token(
        OWN_SECRET, subject="ada", roles=[], ttl_seconds=7200, issuer="modrpc-dev", audience="modrpc", now=now - 6000
    )
    with pytest.raises(Unauthenticated, match="exceeds the gateway's maximum"):
        auth.authenticate(bearer(old), public=False)
    fine = issue_dev_token(OWN_SECRET, subject="ada", roles=[], ttl_seconds=3000, issuer="modrpc-dev", audience="modrpc")
    assert auth.authenticate(bearer(fine), public=False).subject == "ada"
