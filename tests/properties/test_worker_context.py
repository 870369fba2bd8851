"""``gctx`` of running workers: typed module clients, a complete registry, read-only config.

The workers are real (users, inventory, orders, and the test-only ``probe``), share one SQLite
store so they find each other, and are started once per test and shared by that test's
examples: the function-scoped-fixture health check is suppressed because no example changes a
worker. ``gctx`` is the very object the workers hand to their handlers (``worker.service.gctx``);
module calls made through it travel over the sockets to the other workers.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modules.inventory.models import GetStock, Release, Released, Reservation, Reserve, Stock
from modules.users.models import CreateUser, GetUser, User
from runtime.config import Settings
from runtime.context import GlobalContext, current_principal
from runtime.context._modules import ModuleProxy
from runtime.errors import NotFound, PermissionDenied
from runtime.identity import Principal
from runtime.worker import Worker
from tests.conftest import MODULES_DIR, PROBE_MODULES_DIR, Dial, StartWorker
from tests.fixtures.worker_modules.probe_client import ProbeClient

SHARED_WORKERS = [HealthCheck.function_scoped_fixture]
"""Workers are started per test and shared by its examples (see the module docstring)."""

EXAMPLE_MODULES = ("users", "inventory", "notifications", "orders")
"""In start order: orders last, so its first read of the store already finds its dependencies."""
module_names = st.one_of(
    st.sampled_from([*EXAMPLE_MODULES, "probe"]),
    st.from_regex(r"[a-z][a-z0-9]{0,10}(_[a-z0-9]{1,5}){0,2}", fullmatch=True),
)
"""Names a handler might ask ``gctx.modules`` for: real modules and made-up ones."""


def declared_modules(module_dir: Path) -> set[str]:
    """``capabilities.modules`` as the module's own ``module.toml`` says, read independently."""
    manifest = tomllib.loads((module_dir / "module.toml").read_text("utf-8"))
    return set(manifest.get("capabilities", {}).get("modules", []))


@dataclass
class Deployment:
    workers: dict[str, Worker]
    probe: ProbeClient

    def gctx(self, module: str) -> GlobalContext:
        service = self.workers[module].service
        assert service is not None
        return service.gctx


@pytest.fixture
async def deployment(
    start_worker: StartWorker, worker_settings: Callable[..., Settings],
    dial: Dial,
) -> AsyncIterator[Deployment]:
    settings = worker_settings()
    workers = {m: await start_worker(m, settings=settings) for m in EXAMPLE_MODULES}
    workers["probe"] = await start_worker("probe", settings=settings, modules_dir=PROBE_MODULES_DIR)
    probe_service = workers["probe"].service
    assert probe_service is not None
    async with dial(workers["probe"]) as channel:
        yield Deployment(workers, ProbeClient(channel, probe_service.catalog.latest.descriptor))


# -- Property 4 ----------------------------------------------------------------------------------

names = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")
module_calls = st.one_of(
    st.tuples(st.just("create_user"), names, st.text(max_size=40)),
    st.tuples(st.just("get_unknown_user"), st.uuids().map(lambda u: u.hex)),
    st.tuples(st.just("get_stock"), st.sampled_from(["WIDGET-1", "GADGET-7", "GIZMO-42"])),
    st.tuples(st.just("reserve_and_release"), st.integers(min_value=1, max_value=2)),
)


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED_WORKERS)
@given(call=module_calls, as_dict=st.booleans())
async def test_every_declared_module_is_a_typed_client_through_gctx(
    deployment: Deployment, call: tuple[Any, ...], as_dict: bool
) -> None:
    """Property 4: Every module is reachable through ``gctx`` as a typed client.

    From the orders worker's ``gctx``, each module orders declares is a client whose methods are
    the callee's handlers in snake_case; a call takes the callee's request model (or a dict that
    becomes one), crosses the socket, and returns the callee's response model, with errors as
    runtime errors. Each example is one or two real calls.
    """
    modules = deployment.gctx("orders").modules
    assert isinstance(modules.users, ModuleProxy) and isinstance(modules.inventory, ModuleProxy)
    assert dir(modules.users) == ["create_user", "get_user"]
    assert dir(modules.inventory) == ["check_stock", "get_stock", "release", "reserve", "restock_batch"]

    def request(model: type[Any], **fields: Any) -> Any:
        return fields if as_dict else model(**fields)

    # A call made while serving someone: users checks that caller's roles (inner_roles = "caller"),
    # so the examples run on behalf of a caller who holds them.
    acting_for = current_principal.set(Principal("ada", ("users:read", "users:write"), "jwt"))
    try:
        kind = call[0]
        if kind == "create_user":
            _, given_name, family_name = call
            email = f"u-{uuid.uuid4().hex[:12]}@example.com"
            user = await modules.users.create_user(
                request(CreateUser, given_name=given_name, family_name=family_name, email=email)
            )
            assert isinstance(user, User) and isinstance(user.created_at, datetime)
            assert (user.given_name, user.family_name, user.email) == (given_name, family_name, email)
            again = await modules.users.get_user(request(GetUser, id=user.id))
            assert again == user
        elif kind == "get_unknown_user":
            with pytest.raises(NotFound, match=call[1]):
                await modules.users.get_user(request(GetUser, id=call[1]))
        elif kind == "get_stock":
            stock = await modules.inventory.get_stock(request(GetStock, sku=call[1]))
            assert isinstance(stock, Stock) and stock.sku == call[1] and stock.available >= 0
        else:
            reservation = await modules.inventory.reserve(
                request(Reserve, sku="WIDGET-1", quantity=call[1], order_id="property-4")
            )
            assert isinstance(reservation, Reservation) and reservation.quantity == call[1]
            released = await modules.inventory.release(
                request(Release, reservation_id=reservation.reservation_id)
            )
            assert isinstance(released, Released) and released.released is True
    finally:
        current_principal.reset(acting_for)


# -- Property 28 ---------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED_WORKERS)
@given(holder=st.sampled_from([*EXAMPLE_MODULES, "probe"]), name=module_names)
async def test_the_registry_holds_exactly_the_declared_modules(
    deployment: Deployment, holder: str, name: str
) -> None:
    """Property 28: The module registry is complete.

    For every running worker, ``gctx.modules.names()`` is exactly the modules its
    ``module.toml`` declares (all of them loaded); a declared name gives its client, any other
    is refused with PERMISSION_DENIED naming the missing capability, in process and, through
    the probe module's handler, over the wire.
    """
    module_dir = (PROBE_MODULES_DIR if holder == "probe" else MODULES_DIR) / holder
    declared = declared_modules(module_dir)
    modules = deployment.gctx(holder).modules
    assert modules.names() == sorted(declared)
    assert (name in modules) == (name in declared)
    if name in declared:
        assert isinstance(getattr(modules, name), ModuleProxy)
    else:
        with pytest.raises(PermissionDenied) as info:
            getattr(modules, name)
        assert f"did not declare capability modules=['{name}']" in info.value.message

    # probe declares no modules: its handler's lookup fails its call, precisely
    with pytest.raises(grpc.aio.AioRpcError) as wire:
        await deployment.probe.call("Reach", {"module": name}, timeout=5)
    assert wire.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert wire.value.details() == f"module 'probe' did not declare capability modules=['{name}']"


# -- Property 32 ---------------------------------------------------------------------------------

MUTATIONS: dict[str, Callable[[Any, str, Any], None]] = {
    "setitem": lambda cfg, key, value: cfg.__setitem__(key, value),
    "delitem": lambda cfg, key, value: cfg.__delitem__(key),
    "setattr": lambda cfg, key, value: setattr(cfg, key, value),
    "delattr": lambda cfg, key, value: delattr(cfg, key),
}


@settings(max_examples=100, deadline=None, suppress_health_check=SHARED_WORKERS)
@given(
    holder=st.sampled_from([*EXAMPLE_MODULES, "probe"]),
    key=st.one_of(st.just("module"), st.text(min_size=1, max_size=20)),
    value=st.text(max_size=20),
    mutation=st.sampled_from(sorted(MUTATIONS)),
)
async def test_config_cannot_be_changed_through_gctx(
    deployment: Deployment, holder: str, key: str, value: str, mutation: str
) -> None:
    """Property 32: Config is immutable.

    Every way of changing a running worker's ``gctx.config`` (item or attribute, set or
    delete, known key or not) raises and leaves it as it was; a handler that tries gets
    refused too and reads the old value back over the wire.
    """
    config = deployment.gctx(holder).config
    before = dict(config)
    with pytest.raises(TypeError, match="config is read-only"):
        MUTATIONS[mutation](config, key, value)
    assert dict(config) == before == {"module": holder}

    reply, _ = await deployment.probe.call("SetConfig", {"key": key, "value": value}, timeout=5)
    assert reply["refused"] is True
    assert reply["error"] == f"config is read-only: cannot set {key!r}"
    assert reply["value"] == ("probe" if key == "module" else "")
