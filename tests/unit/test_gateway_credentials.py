"""The ingress remembers verified bearer tokens inside their own time window, and nothing else."""

from __future__ import annotations

import time

import pytest

from runtime.errors import Unauthenticated
from runtime.gateway._auth import Authenticator, hash_api_key, issue_dev_token
from runtime.gateway._ingress import Credentials

SECRET = "a-development-secret-of-at-least-32-bytes"
ISSUER = "modrpc-test"
AUDIENCE = "modrpc"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def authenticator() -> Authenticator:
    return Authenticator(
        hs256_secret=SECRET,
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway=0.0,
        api_keys={"ci": (hash_api_key("k-123"), "ci-bot", ("deploy",))},
    )


def bearer(subject: str = "ana", *, ttl: float = 300.0, now: float | None = None) -> dict[str, str]:
    token = issue_dev_token(
        SECRET, subject=subject, roles=["orders.read"], ttl_seconds=ttl, issuer=ISSUER, audience=AUDIENCE, now=now
    )
    return {"authorization": f"Bearer {token}"}


def test_a_token_seen_again_inside_its_window_gives_the_same_principal_without_verifying_again() -> None:
    credentials = Credentials(authenticator(), clock=Clock())
    headers = bearer()
    first, forwarded = credentials.authenticate(headers, public=False)
    again, forwarded_again = credentials.authenticate(headers, public=False)
    assert again is first  # the remembered object: no second verification built a new one
    assert first.subject == "ana" and first.roles == ("orders.read",)
    assert forwarded == forwarded_again == "ana;orders.read;jwt"


def test_past_the_tokens_expiry_the_authenticator_decides_again() -> None:
    clock = Clock()
    credentials = Credentials(authenticator(), clock=clock)
    headers = bearer(ttl=60)
    first, _ = credentials.authenticate(headers, public=False)
    clock.now += 120  # past exp on the cache's clock; the real clock says the token is still valid
    again, _ = credentials.authenticate(headers, public=False)
    assert again is not first
    assert again == first


def test_a_token_refused_by_the_authenticator_is_refused_every_time_and_never_remembered() -> None:
    credentials = Credentials(authenticator(), clock=Clock())
    expired = bearer(now=time.time() - 3600, ttl=60)
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="token expired"):
            credentials.authenticate(expired, public=False)
    forged = {"authorization": bearer()["authorization"][:-4] + "AAAA"}
    with pytest.raises(Unauthenticated, match="bad signature"):
        credentials.authenticate(forged, public=False)


def test_api_keys_and_anonymous_callers_get_their_principal_and_its_forwarded_form() -> None:
    credentials = Credentials(authenticator(), clock=Clock())
    principal, forwarded = credentials.authenticate({"x-api-key": "k-123"}, public=False)
    assert principal.subject == "ci-bot" and forwarded == "ci-bot;deploy;api_key"
    with pytest.raises(Unauthenticated, match="unknown API key"):
        credentials.authenticate({"x-api-key": "k-999"}, public=False)
    anonymous, forwarded = credentials.authenticate({}, public=True)
    assert anonymous.subject == "anonymous" and forwarded == "anonymous;;anonymous"
    with pytest.raises(Unauthenticated, match="missing credentials"):
        credentials.authenticate({}, public=False)


def test_the_number_of_remembered_tokens_is_bounded_and_the_oldest_goes_first() -> None:
    credentials = Credentials(authenticator(), size=2, clock=Clock())
    tokens = [bearer(subject) for subject in ("a", "b", "c")]
    first = [credentials.authenticate(headers, public=False)[0] for headers in tokens]
    assert credentials.authenticate(tokens[2], public=False)[0] is first[2]
    assert credentials.authenticate(tokens[1], public=False)[0] is first[1]
    assert credentials.authenticate(tokens[0], public=False)[0] is not first[0]  # evicted
