"""Ingress authentication: JWT bearer tokens and hashed API keys.

A call proves who it is in one of two ways:

* ``authorization: Bearer <jwt>``, signed HS256, RS256 or ES256. ``exp``, ``nbf``, ``iss``,
  ``aud`` and ``sub`` are required and checked. The key is chosen by the token's ``kid`` when a
  JWKS file provides one, otherwise by its algorithm; ``alg: none`` and any algorithm outside the
  allowed set are refused before a signature is even looked at.
* ``x-api-key: <key>``. Keys are stored only as ``sha256:<hex>`` hashes (see
  :func:`hash_api_key`) and compared with :func:`hmac.compare_digest`, against every stored hash,
  so the time taken says nothing about which key came close.

Credentials are unambiguous: two ``authorization`` (or ``x-api-key``) headers are refused
(:func:`check_single_credentials`) rather than resolved by whichever comes last, and a bearer
token sent with an API key must name the same subject. A token's lifetime is bounded
(``max_lifetime``): one whose ``exp`` lies further ahead than that is refused, however well
signed.

Failures raise :class:`~runtime.errors.Unauthenticated` with a message that says what was wrong
("token expired", "bad signature", ...) and never repeats the credential.

    >>> auth = Authenticator(hs256_secret="s" * 32, issuer="modrpc-dev", audience="modrpc")
    >>> token = issue_dev_token("s" * 32, subject="ana", roles=["admin"], ttl_seconds=60,
    ...                         issuer="modrpc-dev", audience="modrpc")
    >>> auth.authenticate({"authorization": f"Bearer {token}"}, public=False).subject
    'ana'
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from runtime.errors import Unauthenticated
from runtime.identity import ANONYMOUS, Principal

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "ApiKey",
    "Authenticator",
    "check_single_credentials",
    "hash_api_key",
    "issue_dev_token",
]

SUPPORTED_ALGORITHMS = ("HS256", "RS256", "ES256")
"""Every JWT algorithm the gateway can verify; ``none`` is never among them."""

ROLES_CLAIM = "roles"
REQUIRED_CLAIMS = ("exp", "nbf", "iss", "aud", "sub")
_HASH_PREFIX = "sha256:"
_MIN_HMAC_SECRET = 32  # RFC 7518 §3.2: an HS256 key is at least as long as the hash output.


_CREDENTIAL_KEYS = ("authorization", "x-api-key")


def check_single_credentials(metadata: Iterable[tuple[str, str | bytes]]) -> None:
    """Refuse metadata carrying ``authorization`` or ``x-api-key`` more than once.

    Which of two credentials a proxy or library would pick is anybody's guess, so neither is.
    """
    seen: set[str] = set()
    for key, _ in metadata:
        if key in _CREDENTIAL_KEYS:
            if key in seen:
                raise Unauthenticated(f"more than one '{key}' header: send exactly one credential")
            seen.add(key)


def key_id(key: Any) -> str:
    """A short, stable name for a public key in logs: its SPKI SHA-256, first 16 hex digits."""
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "spki:" + hashlib.sha256(der).hexdigest()[:16]


def hash_api_key(key: str) -> str:
    """The stored form of an API key: ``sha256:<hex digest>``. The key itself is never stored."""
    return _HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored API key: its hash (``sha256:<hex>``) and the principal it authenticates as."""

    key_hash: str
    subject: str
    roles: tuple[str, ...] = ()


def issue_dev_token(
    secret: str,
    *,
    subject: str,
    roles: Sequence[str],
    ttl_seconds: float,
    issuer: str,
    audience: str,
    now: float | None = None,
) -> str:
    """An HS256 token the dev configuration accepts (``modrpc token``).

    ``now`` (unix seconds) lets a caller mint a token for another moment, e.g. an expired one.
    """
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": subject,
        ROLES_CLAIM: list(roles),
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_seconds),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def _algorithm_of_key(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError(f"unsupported public key type {type(key).__name__}; expected RSA or EC P-256")


class Authenticator:
    """Checks the credentials of one call. Built once from configuration; immutable after.

    ``public_keys_pem`` holds RS256 and/or ES256 public keys (the algorithm follows from the key
    type); several keys of one type allow rotation. ``jwks_path`` names a JWKS file whose keys
    are found by ``kid``. ``api_keys`` maps a key id to its :class:`ApiKey` (or a tuple
    ``(hash, subject, roles)``). ``leeway`` is the clock skew, in seconds, tolerated on
    ``exp`` and ``nbf``; ``max_lifetime`` (seconds, None: unbounded) the longest a token may live.
    """

    def __init__(
        self,
        *,
        hs256_secret: str | None = None,
        public_keys_pem: Sequence[str] = (),
        jwks_path: str | Path | None = None,
        issuer: str,
        audience: str,
        leeway: float = 30.0,
        algorithms: Collection[str] = SUPPORTED_ALGORITHMS,
        api_keys: Mapping[str, ApiKey | tuple[str, str, Sequence[str]]] | None = None,
        max_lifetime: float | None = None,
        hs256_label: str = "auth.jwt_secret",
    ) -> None:
        unknown = set(algorithms) - set(SUPPORTED_ALGORITHMS)
        if unknown:
            raise ValueError(f"unsupported JWT algorithms {sorted(unknown)}; supported: {SUPPORTED_ALGORITHMS}")
        if hs256_secret is not None and len(hs256_secret.encode()) < _MIN_HMAC_SECRET:
            raise ValueError(f"the HS256 secret must be at least {_MIN_HMAC_SECRET} bytes")
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._max_lifetime = max_lifetime
        self._hs256_label = hs256_label
        self._algorithms = frozenset(algorithms)
        self._keys_by_alg: dict[str, list[Any]] = {alg: [] for alg in SUPPORTED_ALGORITHMS}
        if hs256_secret is not None:
            self._keys_by_alg["HS256"].append(hs256_secret)
        for pem in public_keys_pem:
            key = load_pem_public_key(pem.encode())
            self._keys_by_alg[_algorithm_of_key(key)].append(key)
        self._keys_by_kid: dict[str, tuple[str, Any]] = {}
        if jwks_path is not None:
            self._load_jwks(Path(jwks_path))
        self._api_keys: tuple[tuple[str, bytes, Principal], ...] = tuple(
            self._api_key_entry(key_id, entry) for key_id, entry in (api_keys or {}).items()
        )

    def describe(self) -> list[str]:
        """What this authenticator accepts, for the start-up log: algorithms and key ids, never keys."""
        lines = []
        for alg in SUPPORTED_ALGORITHMS:
            keys = self._keys_by_alg[alg]
            kids = sorted(kid for kid, (key_alg, _) in self._keys_by_kid.items() if key_alg == alg)
            if alg not in self._algorithms or not (keys or kids):
                continue
            if alg == "HS256":
                lines.append(f"HS256 with {self._hs256_label}")
            else:
                ids = [key_id(key) for key in keys] + [f"kid:{kid}" for kid in kids]
                lines.append(f"{alg} with keys {', '.join(ids)}")
        if self._api_keys:
            lines.append(f"API keys {', '.join(key for key, _, _ in self._api_keys)}")
        return lines or ["no JWT key and no API key: only public methods can be called"]

    def _load_jwks(self, path: Path) -> None:
        jwks = jwt.PyJWKSet.from_json(path.read_text())
        for jwk in jwks.keys:
            alg = jwk.algorithm_name
            if alg not in SUPPORTED_ALGORITHMS:
                raise ValueError(f"{path}: key {jwk.key_id!r} uses unsupported algorithm {alg}")
            if jwk.key_id is None:
                self._keys_by_alg[alg].append(jwk.key)
            else:
                self._keys_by_kid[jwk.key_id] = (alg, jwk.key)

    @staticmethod
    def _api_key_entry(
        key_id: str, entry: ApiKey | tuple[str, str, Sequence[str]]
    ) -> tuple[str, bytes, Principal]:
        stored = entry if isinstance(entry, ApiKey) else ApiKey(entry[0], entry[1], tuple(entry[2]))
        if not stored.key_hash.startswith(_HASH_PREFIX):
            raise ValueError(f"API key {key_id!r}: the stored hash must look like 'sha256:<hex>'")
        principal = Principal(
            subject=stored.subject, roles=tuple(stored.roles), method="api_key", claims={"key_id": key_id}
        )
        return key_id, stored.key_hash.encode(), principal

    def authenticate(self, metadata: Mapping[str, str | bytes], *, public: bool) -> Principal:
        """The caller's principal, from normalised (lower-case) metadata.

        A public method needs no credentials and gets :data:`~runtime.identity.ANONYMOUS`
        without them. Credentials that are present are always checked, public or not: a
        client sending a broken token should hear about it rather than silently lose its roles.
        """
        authorization = metadata.get("authorization")
        api_key = metadata.get("x-api-key")
        if authorization is not None:
            principal = self._from_bearer(authorization)
            if api_key is not None:
                self.check_agree(principal, self._from_api_key(api_key))
            return principal
        if api_key is not None:
            return self._from_api_key(api_key)
        if public:
            return ANONYMOUS
        raise Unauthenticated("missing credentials: send 'authorization: Bearer <jwt>' or 'x-api-key'")

    @staticmethod
    def check_agree(token: Principal, other: Principal) -> None:
        """Refuse a call whose two credentials name different callers."""
        if token.subject != other.subject:
            raise Unauthenticated(
                f"the bearer token and the {'API key' if other.method == 'api_key' else 'client certificate'} "
                "name different callers: send one credential"
            )

    def _from_bearer(self, header: str | bytes) -> Principal:
        if not isinstance(header, str):
            raise Unauthenticated("malformed authorization header")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthenticated("unsupported authorization scheme; expected 'Bearer <jwt>'")
        token = token.strip()
        if not token:
            raise Unauthenticated("missing bearer token")
        claims = self._verify(token)
        roles = claims.get(ROLES_CLAIM, [])
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise Unauthenticated(f"token claim '{ROLES_CLAIM}' must be a list of strings")
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token claim 'sub' must be a non-empty string")
        return Principal(subject=subject, roles=tuple(roles), method="jwt", claims=claims)

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise Unauthenticated("malformed token") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise Unauthenticated("unsigned tokens (alg 'none') are refused")
        if alg not in self._algorithms:
            raise Unauthenticated(f"token algorithm {alg!r} is not allowed")
        candidates = self._candidate_keys(alg, header.get("kid"))
        if not candidates:
            raise Unauthenticated(f"no key configured for token algorithm {alg!r}")
        failure: jwt.PyJWTError | None = None
        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=self._leeway,
                    options={"require": list(REQUIRED_CLAIMS)},
                )
                self._check_lifetime(claims)
                return claims
            except jwt.InvalidSignatureError as exc:
                failure = exc  # another key of the same algorithm may have signed it (rotation)
            except jwt.PyJWTError as exc:
                raise Unauthenticated(_describe(exc)) from exc
        assert failure is not None
        raise Unauthenticated(_describe(failure)) from failure

    def _check_lifetime(self, claims: Mapping[str, Any]) -> None:
        """Refuse a token that lives longer than ``max_lifetime``: from its ``iat`` when it has
        one, and from now in any case (an ``exp`` years ahead is a stolen token's best friend)."""
        limit = self._max_lifetime
        if limit is None:
            return
        expires = claims["exp"]
        starts = [time.time()]
        issued = claims.get("iat")
        if isinstance(issued, int | float) and not isinstance(issued, bool):
            starts.append(float(issued))
        lifetime = expires - min(starts)
        if lifetime > limit + self._leeway:
            raise Unauthenticated(
                f"token lifetime of {lifetime:.0f}s exceeds the gateway's maximum of {limit:.0f}s "
                "(auth.max_token_lifetime)"
            )

    def _candidate_keys(self, alg: str, kid: object) -> list[Any]:
        if isinstance(kid, str) and kid in self._keys_by_kid:
            key_alg, key = self._keys_by_kid[kid]
            if key_alg != alg:
                raise Unauthenticated(f"token algorithm {alg!r} does not match the algorithm of key {kid!r}")
            return [key]
        if kid is not None and not self._keys_by_alg[alg]:
            raise Unauthenticated("unknown signing key id")
        return self._keys_by_alg[alg]

    def _from_api_key(self, value: str | bytes) -> Principal:
        if not isinstance(value, str) or not value.strip():
            raise Unauthenticated("malformed API key")
        presented = hash_api_key(value.strip()).encode()
        found: Principal | None = None
        for _key_id, stored, principal in self._api_keys:
            # No early exit: every stored hash is compared, whatever matched before.
            if hmac.compare_digest(presented, stored):
                found = principal
        if found is None:
            raise Unauthenticated("unknown API key")
        return found


def _describe(exc: jwt.PyJWTError) -> str:
    """A precise, credential-free message for a PyJWT failure."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not yet valid (nbf or iat is in the future)"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "bad signature"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "token audience is not accepted"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "token issuer is not accepted"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token is missing required claim {exc.claim!r}"
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return "token claim 'iat' is malformed"
    if isinstance(exc, jwt.exceptions.InvalidSubjectError):
        return "token claim 'sub' must be a string"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "token algorithm is not allowed"
    if isinstance(exc, jwt.DecodeError):
        return "malformed token"
    if isinstance(exc, jwt.InvalidKeyError):
        return "token cannot be verified with the configured key"
    return "invalid token"
