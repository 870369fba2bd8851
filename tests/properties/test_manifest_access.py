"""Properties 19 and 40: capabilities are allowed iff declared, and registration checks them.

Declarations go through a real ``module.toml`` text. The expected answers come from simple,
independent oracles: set membership, a regular expression per NATS pattern, and for wildcard
subscriptions a brute-force check over every concrete subject up to a bounded length.
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from runtime.errors import CapabilityError, PermissionDenied
from runtime.manifest import CapabilitySet, check_registration, load_module
from runtime.manifest._toml import parse_manifest
from tests.fixtures.manifest_packages import PackageFactory

TOKENS = ["a", "b", "c"]
MODULES = ["users", "orders", "inventory", "billing", "mail"]
SECRETS = ["smtp", "db_url", "stripe/key", "jwt.secret"]
HOSTS = ["smtp.example.com", "api.stripe.com", "10.0.0.7", "localhost"]
PORTS = [25, 443, 587, 8080]

concrete_topics = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3).map(".".join)


@st.composite
def topic_patterns(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(st.sampled_from([*TOKENS, "*"]), min_size=0, max_size=3))
    if not tokens or draw(st.booleans()):
        tokens.append(">")
    return ".".join(tokens)


def nats_regex(pattern: str) -> re.Pattern[str]:
    """The oracle for NATS matching: '*' is one token, '>' one or more trailing tokens."""
    parts = []
    for token in pattern.split("."):
        parts.append({"*": r"[^.]+", ">": r"[^.]+(?:\.[^.]+)*"}.get(token, re.escape(token)))
    return re.compile(r"\.".join(parts))


def matches(pattern: str, topic: str) -> bool:
    return nats_regex(pattern).fullmatch(topic) is not None


def universe(max_len: int) -> list[str]:
    """Every concrete subject up to ``max_len`` tokens over the alphabet plus a token no pattern names."""
    alphabet = [*TOKENS, "z"]
    return [
        ".".join(p) for n in range(1, max_len + 1) for p in itertools.product(alphabet, repeat=n)
    ]


UNIVERSE = universe(5)


def covers(patterns: list[str], subscription: str) -> bool:
    """Oracle: every subject the subscription receives is allowed by some declared pattern."""
    wanted = [t for t in UNIVERSE if matches(subscription, t)]
    return all(any(matches(p, t) for p in patterns) for t in wanted)


def toml_list(values: list[str]) -> str:
    return json.dumps(values)


def capability_set(
    modules: list[str],
    publish: list[str],
    subscribe: list[str],
    secrets: list[str],
    network: list[str],
) -> CapabilitySet:
    text = (
        '[module]\nname = "orders"\nversion = "1.0.0"\n[capabilities]\n'
        f"modules = {toml_list(modules)}\npublish = {toml_list(publish)}\n"
        f"subscribe = {toml_list(subscribe)}\nsecrets = {toml_list(secrets)}\n"
        f"network = {toml_list(network)}\n"
    )
    return CapabilitySet.from_manifest(parse_manifest(text, source="orders/module.toml"))


def check(allowed: bool, expected: bool, require: Callable[..., None], *args: object) -> None:
    """``allows_*`` answers as the oracle does, and ``require_*`` raises exactly when it says no."""
    assert allowed is expected
    if expected:
        require(*args)
    else:
        with pytest.raises(PermissionDenied, match=r"^module 'orders' did not declare capability "):
            require(*args)


@settings(max_examples=200, deadline=None)
@given(
    modules=st.lists(st.sampled_from(MODULES), unique=True),
    publish=st.lists(topic_patterns(), max_size=3),
    subscribe=st.lists(topic_patterns(), max_size=3),
    secrets=st.lists(st.sampled_from(SECRETS), unique=True),
    network=st.lists(st.tuples(st.sampled_from(HOSTS), st.sampled_from(PORTS)), max_size=3),
    module_query=st.sampled_from(MODULES),
    topic_query=concrete_topics,
    subscription_query=st.one_of(concrete_topics, topic_patterns()),
    secret_query=st.sampled_from(SECRETS),
    host_query=st.tuples(st.sampled_from(HOSTS), st.sampled_from(PORTS), st.booleans()),
)
def test_access_is_allowed_iff_declared(
    modules: list[str],
    publish: list[str],
    subscribe: list[str],
    secrets: list[str],
    network: list[tuple[str, int]],
    module_query: str,
    topic_query: str,
    subscription_query: str,
    secret_query: str,
    host_query: tuple[str, int, bool],
) -> None:
    """Property 19: Access is allowed iff the capability is declared."""
    caps = capability_set(modules, publish, subscribe, secrets, [f"{h}:{p}" for h, p in network])
    check(
        caps.allows_module(module_query), module_query in modules, caps.require_module, module_query
    )
    published = any(matches(p, topic_query) for p in publish)
    check(caps.allows_publish(topic_query), published, caps.require_publish, topic_query)
    subscribed = covers(subscribe, subscription_query)
    event(f"publish allowed: {published}")
    event(f"subscribe allowed: {subscribed}")
    check(
        caps.allows_subscribe(subscription_query),
        subscribed,
        caps.require_subscribe,
        subscription_query,
    )
    check(
        caps.allows_secret(secret_query), secret_query in secrets, caps.require_secret, secret_query
    )
    host, port, shout = host_query
    asked = host.upper() if shout else host
    declared = (host, port) in network
    check(caps.allows_network(asked, port), declared, caps.require_network, asked, port)


# -- Property 40 -----------------------------------------------------------------------------------
USE_KINDS = ["modules", "publish", "subscribe", "secrets"]


def use_line(kind: str, value: str) -> str:
    return {
        "modules": f"    await gctx.modules.{value}.ping(req)",
        "publish": f"    await gctx.publish({value!r}, {{}})",
        "subscribe": f"    gctx.subscribe({value!r}, print)",
        "secrets": f"    await gctx.secrets.get({value!r})",
    }[kind]


uses = st.lists(
    st.one_of(
        st.tuples(st.just("modules"), st.sampled_from(MODULES)),
        st.tuples(st.just("publish"), concrete_topics),
        st.tuples(st.just("subscribe"), concrete_topics),
        st.tuples(st.just("secrets"), st.sampled_from(SECRETS)),
    ),
    max_size=5,
)


@settings(max_examples=100, deadline=None)
@given(
    known=st.sets(st.sampled_from(MODULES)),
    modules=st.lists(st.sampled_from(MODULES), unique=True, max_size=3),
    publish=st.lists(topic_patterns(), max_size=2),
    subscribe=st.lists(topic_patterns(), max_size=2),
    secrets=st.lists(st.sampled_from(SECRETS), unique=True, max_size=2),
    used=uses,
)
def test_registration_is_refused_iff_a_capability_is_unknown_or_undeclared(
    known: set[str],
    modules: list[str],
    publish: list[str],
    subscribe: list[str],
    secrets: list[str],
    used: list[tuple[str, str]],
) -> None:
    """Property 40: Registration is refused for undeclared or unknown capabilities."""
    header = [
        "from runtime import handler",
        "from {pkg}.models import GetUserRequest, User",
        "",
        "",
        "@handler",
        "async def get_user(req: GetUserRequest, lctx, gctx) -> User:",
    ]
    body = [use_line(kind, value) for kind, value in used]
    handlers = "\n".join([*header, *body, "    return User(id=req.id, name='x')", ""])
    manifest = (
        '[module]\nname = "orders"\nversion = "1.0.0"\nhandlers = "{pkg}.orders.handlers"\n'
        f"[capabilities]\nmodules = {toml_list(modules)}\npublish = {toml_list(publish)}\n"
        f"subscribe = {toml_list(subscribe)}\nsecrets = {toml_list(secrets)}\n"
    )
    declared = {
        "modules": lambda v: v in modules,
        "publish": lambda v: any(matches(p, v) for p in publish),
        "subscribe": lambda v: any(matches(p, v) for p in subscribe),
        "secrets": lambda v: v in secrets,
    }
    undeclared = [
        (len(header) + 1 + i, kind, value)
        for i, (kind, value) in enumerate(used)
        if not declared[kind](value)
    ]
    unknown = sorted(set(modules) - known)
    event("accepted" if not undeclared and not unknown else "refused")

    with tempfile.TemporaryDirectory() as tmp, PackageFactory(Path(tmp)) as packages:
        pkg = packages.make({"orders/module.toml": manifest, "orders/handlers.py": handlers})
        loaded = load_module(Path(tmp) / pkg / "orders")
        if not undeclared and not unknown:
            check_registration(loaded, known)
            return
        with pytest.raises(CapabilityError) as info:
            check_registration(loaded, known)
    message = str(info.value)
    for line, kind, value in undeclared:
        assert (
            f"{pkg}/orders/handlers.py:{line}: module 'orders' uses {kind}=[{value!r}]" in message
        )
    if unknown:
        assert f"unknown module(s) {unknown}" in message
    assert len(message.splitlines()) == len(undeclared) + (1 if unknown else 0)
