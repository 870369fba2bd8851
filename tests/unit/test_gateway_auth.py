"""Ingress authentication: JWT (HS256/RS256/ES256, PEM and JWKS keys) and hashed API keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from runtime.errors import Unauthenticated
from runtime.gateway._auth import ApiKey, Authenticator, hash_api_key, issue_dev_token
from runtime.identity import ANONYMOUS

SECRET = "a-development-secret-of-at-least-32-bytes"
ISSUER = "modrpc-test"
AUDIENCE = "modrpc"


def public_pem(private_key: Any) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "ana",
        "roles": ["orders.read"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "nbf": now - 1,
        "exp": now + 300,
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def hs_auth() -> Authenticator:
    return Authenticator(hs256_secret=SECRET, issuer=ISSUER, audience=AUDIENCE)


def refused(auth: Authenticator, token: str, *, public: bool = False) -> str:
    """The Unauthenticated message for ``token``, checked never to repeat the token."""
    with pytest.raises(Unauthenticated) as caught:
        auth.authenticate(bearer(token), public=public)
    message = caught.value.message
    for part in token.split("."):
        if len(part) > 8:
            assert part not in message
    return message


# -- JWT: accepted ------------------------------------------------------------------------


def test_a_valid_hs256_token_gives_its_principal(hs_auth: Authenticator) -> None:
    principal = hs_auth.authenticate(bearer(jwt.encode(claims(), SECRET, algorithm="HS256")), public=False)
    assert (principal.subject, principal.roles, principal.method) == ("ana", ("orders.read",), "jwt")
    assert principal.claims["iss"] == ISSUER


def test_a_valid_rs256_token_is_verified_with_the_pem_key(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = Authenticator(public_keys_pem=[public_pem(rsa_key)], issuer=ISSUER, audience=AUDIENCE)
    token = jwt.encode(claims(roles=["admin"]), rsa_key, algorithm="RS256")
    assert auth.authenticate(bearer(token), public=False).roles == ("admin",)


def test_a_valid_es256_token_is_verified_with_the_pem_key(ec_key: ec.EllipticCurvePrivateKey) -> None:
    auth = Authenticator(public_keys_pem=[public_pem(ec_key)], issuer=ISSUER, audience=AUDIENCE)
    token = jwt.encode(claims(), ec_key, algorithm="ES256")
    assert auth.authenticate(bearer(token), public=False).subject == "ana"


def test_any_configured_key_of_the_algorithm_may_have_signed(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    auth = Authenticator(
        public_keys_pem=[public_pem(rsa_key), public_pem(other_rsa_key)], issuer=ISSUER, audience=AUDIENCE
    )
    token = jwt.encode(claims(), other_rsa_key, algorithm="RS256")
    assert auth.authenticate(bearer(token), public=False).subject == "ana"


def jwks_file(tmp_path: Path, entries: list[tuple[Any, str, str]]) -> Path:
    keys = []
    for private_key, kid, alg in entries:
        algorithm = jwt.get_algorithm_by_name(alg)
        jwk = json.loads(algorithm.to_jwk(private_key.public_key()))
        keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    return path


def test_a_jwks_key_is_chosen_by_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    path = jwks_file(tmp_path, [(rsa_key, "rsa-1", "RS256"), (ec_key, "ec-1", "ES256")])
    auth = Authenticator(jwks_path=path, issuer=ISSUER, audience=AUDIENCE)
    rs = jwt.encode(claims(sub="rs"), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(claims(sub="es"), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    assert auth.authenticate(bearer(rs), public=False).subject == "rs"
    assert auth.authenticate(bearer(es), public=False).subject == "es"


def test_a_kid_whose_key_has_another_algorithm_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    path = jwks_file(tmp_path, [(rsa_key, "rsa-1", "RS256")])
    auth = Authenticator(jwks_path=path, issuer=ISSUER, audience=AUDIENCE)
    token = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "rsa-1"})
    assert "does not match" in refused(auth, token)


def test_an_unknown_kid_is_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = jwks_file(tmp_path, [(rsa_key, "rsa-1", "RS256")])
    auth = Authenticator(jwks_path=path, issuer=ISSUER, audience=AUDIENCE)
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-2"})
    assert refused(auth, token) == "unknown signing key id"


def test_leeway_tolerates_small_clock_skew() -> None:
    auth = Authenticator(hs256_secret=SECRET, issuer=ISSUER, audience=AUDIENCE, leeway=30)
    token = jwt.encode(claims(exp=int(time.time()) - 10), SECRET, algorithm="HS256")
    assert auth.authenticate(bearer(token), public=False).subject == "ana"


# -- JWT: refused -------------------------------------------------------------------------


def unsigned(payload: dict[str, Any]) -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(hs_auth: Authenticator, alg: str) -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": alg}).encode()).rstrip(b"=").decode()
    token = header + "." + unsigned(claims()).split(".", 1)[1]
    assert "none" in refused(hs_auth, token)


def test_an_algorithm_outside_the_allowed_set_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = Authenticator(
        hs256_secret=SECRET, public_keys_pem=[public_pem(rsa_key)], issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"]
    )
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert refused(auth, token) == "token algorithm 'HS256' is not allowed"


def test_an_hs256_token_signed_with_the_public_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    """The classic algorithm-confusion attack: the public key used as an HMAC secret."""
    auth = Authenticator(public_keys_pem=[public_pem(rsa_key)], issuer=ISSUER, audience=AUDIENCE)
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    # Signed by hand: PyJWT itself refuses to use a PEM key as an HMAC secret.
    signature = hmac.new(public_pem(rsa_key).encode(), header + b"." + payload, hashlib.sha256).digest()
    token = b".".join([header, payload, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()
    assert "HS256" in refused(auth, token)


def test_a_tampered_signature_is_refused(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert refused(hs_auth, f"{head}.{payload}.{flipped}") == "bad signature"


def test_a_tampered_payload_is_refused(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(roles=["user"]), SECRET, algorithm="HS256")
    head, _, signature = token.split(".")
    raised = base64.urlsafe_b64encode(json.dumps(claims(roles=["admin"])).encode()).rstrip(b"=").decode()
    assert refused(hs_auth, f"{head}.{raised}.{signature}") == "bad signature"


def test_every_single_character_change_is_refused(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    for index, char in enumerate(token):
        if char == "." or index + 1 == len(token) or token[index + 1] == ".":
            continue  # the last character of a segment may carry only padding bits
        replacement = "x" if char != "x" else "y"
        with pytest.raises(Unauthenticated):
            hs_auth.authenticate(bearer(token[:index] + replacement + token[index + 1 :]), public=False)


def test_a_token_signed_with_another_secret_is_refused(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(), "another-secret-that-is-also-32-bytes-long", algorithm="HS256")
    assert refused(hs_auth, token) == "bad signature"


def test_an_expired_token_is_refused(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 3600), SECRET, algorithm="HS256")
    assert refused(hs_auth, token) == "token expired"


def test_a_token_not_yet_valid_is_refused(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(nbf=int(time.time()) + 3600), SECRET, algorithm="HS256")
    assert "not yet valid" in refused(hs_auth, token)


def test_a_foreign_issuer_is_refused(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(iss="someone-else"), SECRET, algorithm="HS256")
    assert refused(hs_auth, token) == "token issuer is not accepted"


def test_a_foreign_audience_is_refused(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(aud="another-api"), SECRET, algorithm="HS256")
    assert refused(hs_auth, token) == "token audience is not accepted"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iss", "aud", "sub"])
def test_a_missing_required_claim_is_refused_and_named(hs_auth: Authenticator, claim: str) -> None:
    token = jwt.encode(claims(**{claim: None}), SECRET, algorithm="HS256")
    assert refused(hs_auth, token) == f"token is missing required claim {claim!r}"


@pytest.mark.parametrize("roles", ["admin", [1, 2], {"admin": True}])
def test_a_roles_claim_that_is_not_a_list_of_strings_is_refused(hs_auth: Authenticator, roles: Any) -> None:
    token = jwt.encode(claims(roles=roles), SECRET, algorithm="HS256")
    assert "roles" in refused(hs_auth, token)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer not-a-jwt", "malformed token"),
        ("Bearer ", "missing bearer token"),
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", "unsupported authorization scheme"),
    ],
)
def test_a_malformed_authorization_header_is_refused(hs_auth: Authenticator, header: str, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message) as caught:
        hs_auth.authenticate({"authorization": header}, public=False)
    assert "YWxhZGRpbjpvcGVuc2VzYW1l" not in caught.value.message


def test_an_algorithm_without_a_configured_key_is_refused(rsa_key: rsa.RSAPrivateKey, hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert refused(hs_auth, token) == "no key configured for token algorithm 'RS256'"


# -- API keys -----------------------------------------------------------------------------


def test_hash_api_key_is_a_prefixed_sha256_hex_digest() -> None:
    hashed = hash_api_key("k-123")
    assert hashed.startswith("sha256:") and len(hashed) == len("sha256:") + 64
    assert hashed == hash_api_key("k-123") != hash_api_key("k-124")


@pytest.fixture
def key_auth() -> Authenticator:
    return Authenticator(
        hs256_secret=SECRET,
        issuer=ISSUER,
        audience=AUDIENCE,
        api_keys={
            "ci": ApiKey(hash_api_key("ci-secret-key"), "ci-bot", ("deploy",)),
            "ops": (hash_api_key("ops-secret-key"), "ops", ["admin", "deploy"]),
        },
    )


def test_a_known_api_key_gives_its_principal(key_auth: Authenticator) -> None:
    principal = key_auth.authenticate({"x-api-key": "ops-secret-key"}, public=False)
    assert (principal.subject, principal.roles, principal.method) == ("ops", ("admin", "deploy"), "api_key")
    assert principal.claims["key_id"] == "ops"


def test_an_unknown_api_key_is_refused_without_echoing_it(key_auth: Authenticator) -> None:
    with pytest.raises(Unauthenticated, match="unknown API key") as caught:
        key_auth.authenticate({"x-api-key": "ops-secret-kez"}, public=False)
    assert "ops-secret-kez" not in caught.value.message


def test_api_keys_are_held_only_as_hashes(key_auth: Authenticator) -> None:
    held = repr(vars(key_auth) if hasattr(key_auth, "__dict__") else key_auth)
    assert "ops-secret-key" not in held
    assert hash_api_key("ops-secret-key").encode() in [stored for _, stored, _ in key_auth._api_keys]


def test_a_stored_key_that_is_not_a_hash_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="sha256"):
        Authenticator(issuer=ISSUER, audience=AUDIENCE, api_keys={"bad": ("plain-text-key", "x", [])})


# -- public methods, missing credentials, construction -----------------------------------


def test_a_public_method_needs_no_credentials(hs_auth: Authenticator) -> None:
    assert hs_auth.authenticate({}, public=True) is ANONYMOUS


def test_a_public_method_still_recognises_valid_credentials(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert hs_auth.authenticate(bearer(token), public=True).subject == "ana"


def test_a_public_method_still_refuses_bad_credentials(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 3600), SECRET, algorithm="HS256")
    assert refused(hs_auth, token, public=True) == "token expired"


def test_a_private_method_without_credentials_is_refused(hs_auth: Authenticator) -> None:
    with pytest.raises(Unauthenticated, match="missing credentials"):
        hs_auth.authenticate({"x-request-id": "r"}, public=False)


def test_a_short_hs256_secret_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Authenticator(hs256_secret="short", issuer=ISSUER, audience=AUDIENCE)


def test_an_unsupported_algorithm_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="none"):
        Authenticator(issuer=ISSUER, audience=AUDIENCE, algorithms=["HS256", "none"])


# -- dev tokens ---------------------------------------------------------------------------


def test_a_dev_token_is_accepted_with_its_roles(hs_auth: Authenticator) -> None:
    token = issue_dev_token(SECRET, subject="dev", roles=["a", "b"], ttl_seconds=60, issuer=ISSUER, audience=AUDIENCE)
    principal = hs_auth.authenticate(bearer(token), public=False)
    assert (principal.subject, principal.roles) == ("dev", ("a", "b"))
    assert principal.claims["exp"] - principal.claims["iat"] == 60


def test_a_dev_token_past_its_ttl_is_expired(hs_auth: Authenticator) -> None:
    token = issue_dev_token(
        SECRET, subject="dev", roles=[], ttl_seconds=60, issuer=ISSUER, audience=AUDIENCE, now=time.time() - 3600
    )
    assert refused(hs_auth, token) == "token expired"


def test_a_token_issued_in_the_future_is_refused(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(iat=int(time.time()) + 3600), SECRET, algorithm="HS256")
    assert "not yet valid" in refused(hs_auth, token)


def test_a_malformed_iat_is_refused(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(iat="yesterday"), SECRET, algorithm="HS256")
    assert refused(hs_auth, token) == "token claim 'iat' is malformed"


def test_a_subject_that_is_not_a_string_is_refused(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(sub=42), SECRET, algorithm="HS256")
    assert "'sub'" in refused(hs_auth, token)
