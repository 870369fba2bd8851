"""Capabilities: run-time questions and refusals, the source scan, and registration checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from runtime.errors import CapabilityError, PermissionDenied, status_of
from runtime.manifest import CapabilitySet, check_registration, load_module
from runtime.manifest._scan import CapabilityUse, scan_source
from runtime.manifest._toml import parse_manifest
from tests.fixtures.manifest_packages import PackageFactory, module_toml


def caps(body: str) -> CapabilitySet:
    text = f'[module]\nname = "orders"\nversion = "1.0.0"\n[capabilities]\n{body}'
    return CapabilitySet.from_manifest(parse_manifest(text, source="orders/module.toml"))


def test_modules_must_be_declared_even_the_module_itself() -> None:
    c = caps('modules = ["payments"]')
    assert c.allows_module("payments")
    assert not c.allows_module("orders")
    assert not c.allows_module("pay")


def test_require_names_the_missing_capability_and_maps_to_permission_denied() -> None:
    c = caps('modules = ["inventory"]')
    with pytest.raises(PermissionDenied) as info:
        c.require_module("payments")
    assert str(info.value) == "module 'orders' did not declare capability modules=['payments']"
    assert status_of(info.value) is grpc.StatusCode.PERMISSION_DENIED
    c.require_module("inventory")


@pytest.mark.parametrize(
    ("method", "args", "expected"),
    [
        ("require_publish", ("orders.shipped",), "publish=['orders.shipped']"),
        ("require_subscribe", ("users.>",), "subscribe=['users.>']"),
        ("require_secret", ("stripe_key",), "secrets=['stripe_key']"),
        ("require_network", ("API.Stripe.com", 443), "network=['api.stripe.com:443']"),
    ],
)
def test_every_require_variant_names_key_and_value(
    method: str, args: tuple[object, ...], expected: str
) -> None:
    c = caps("")
    with pytest.raises(
        PermissionDenied, match=r"^module 'orders' did not declare capability "
    ) as info:
        getattr(c, method)(*args)
    assert str(info.value).endswith(expected)


def test_topic_wildcards_follow_nats_rules() -> None:
    c = caps('publish = ["orders.*.created", "audit.>"]\nsubscribe = ["users.*", "events.>"]')
    assert c.allows_publish("orders.eu.created")
    assert not c.allows_publish("orders.created")
    assert not c.allows_publish("orders.eu.west.created")
    assert c.allows_publish("audit.orders.x") and c.allows_publish("audit.x")
    assert not c.allows_publish("audit")
    assert c.allows_subscribe("users.created") and c.allows_subscribe("users.*")
    assert not c.allows_subscribe("users.>")
    assert c.allows_subscribe("events.*.x") and c.allows_subscribe("events.>")
    assert not c.allows_publish("users.created")


def test_secrets_and_network_are_exact() -> None:
    c = caps('secrets = ["smtp_password"]\nnetwork = ["smtp.example.com:587", "[::1]:9000"]')
    assert c.allows_secret("smtp_password") and not c.allows_secret("smtp")
    assert c.allows_network("SMTP.example.com", 587)
    assert not c.allows_network("smtp.example.com", 25)
    assert not c.allows_network("mail.example.com", 587)
    assert c.allows_network("::1", 9000) and c.allows_network("[::1]", 9000)


def test_scan_finds_literal_uses_with_lines() -> None:
    """Registry methods such as ``gctx.modules.names()`` are not modules; ``@subscriber`` subscribes."""
    source = """
async def h(req, lctx, ctx):
    await ctx.modules.payments.charge(req)
    await ctx.publish("orders.created", {})
    await ctx.publish(topic="orders.paid", data={})
    ctx.subscribe("users.>", on_user)
    key = await ctx.secrets.get("stripe_key")
    other = ctx.secrets["webhook"]
    await ctx.publish(dynamic_topic, {})
    await lctx.publish("local.only", {})


def helper(g: "GlobalContext"):
    reachable = g.modules.names()
    return g.modules.inventory


@subscriber("users.created", group="orders")
async def on_user(msg, gctx):
    pass
"""
    uses = scan_source(source, "orders/handlers.py", ["ctx"])
    assert uses == [
        CapabilityUse("modules", "payments", "orders/handlers.py", 3),
        CapabilityUse("publish", "orders.created", "orders/handlers.py", 4),
        CapabilityUse("publish", "orders.paid", "orders/handlers.py", 5),
        CapabilityUse("subscribe", "users.>", "orders/handlers.py", 6),
        CapabilityUse("secrets", "stripe_key", "orders/handlers.py", 7),
        CapabilityUse("secrets", "webhook", "orders/handlers.py", 8),
        CapabilityUse("modules", "inventory", "orders/handlers.py", 15),
        CapabilityUse("subscribe", "users.created", "orders/handlers.py", 18),
    ]


HANDLERS = """
from runtime import handler
from {pkg}.models import CreateUserRequest, User


@handler
async def create_user(req: CreateUserRequest, lctx, g) -> User:
    await g.modules.inventory.reserve(req)
    await g.publish("orders.created", {})
    token = await g.secrets.get("stripe_key")
    return User(id=1, name=req.name)
"""

HOOKS = """
async def notify(lctx, gctx):
    await gctx.publish("audit.orders", {})
"""


@pytest.fixture
def packages(tmp_path: Path) -> Iterator[PackageFactory]:
    with PackageFactory(tmp_path) as factory:
        yield factory


def load(packages: PackageFactory, tmp_path: Path, capabilities: str) -> Path:
    body = f"""
        [capabilities]
        {capabilities}

        [[hooks]]
        id = "notify"
        phase = "after"
        target = "{{pkg}}.orders.hooks:notify"
    """
    pkg = packages.make(
        {
            "orders/module.toml": module_toml("orders", body),
            "orders/handlers.py": HANDLERS,
            "orders/hooks.py": HOOKS,
        }
    )
    return tmp_path / pkg / "orders"


def test_registration_passes_when_everything_used_is_declared(
    packages: PackageFactory, tmp_path: Path
) -> None:
    directory = load(
        packages,
        tmp_path,
        'modules = ["inventory"]\n        publish = ["orders.*", "audit.>"]\n        secrets = ["stripe_key"]',
    )
    check_registration(load_module(directory), {"orders", "inventory"})


def test_registration_lists_every_undeclared_use_with_file_and_line(
    packages: PackageFactory, tmp_path: Path
) -> None:
    directory = load(packages, tmp_path, 'publish = ["orders.created"]')
    with pytest.raises(CapabilityError) as info:
        check_registration(load_module(directory), {"orders", "inventory"})
    pkg = directory.parent.name
    assert str(info.value).splitlines() == [
        f"{pkg}/orders/handlers.py:8: module 'orders' uses modules=['inventory'] but did not declare it in [capabilities]",
        f"{pkg}/orders/handlers.py:10: module 'orders' uses secrets=['stripe_key'] but did not declare it in [capabilities]",
        f"{pkg}/orders/hooks.py:3: module 'orders' uses publish=['audit.orders'] but did not declare it in [capabilities]",
    ]


def test_registration_refuses_an_unknown_module(packages: PackageFactory, tmp_path: Path) -> None:
    directory = load(
        packages,
        tmp_path,
        'modules = ["inventory", "payments"]\n        publish = [">"]\n        secrets = ["stripe_key"]',
    )
    with pytest.raises(CapabilityError) as info:
        check_registration(load_module(directory), {"orders", "inventory"})
    assert str(info.value) == (
        f"{directory / 'module.toml'}: capabilities.modules: unknown module(s) ['payments']; "
        "known modules are ['inventory', 'orders']"
    )
