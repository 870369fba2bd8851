"""Fixtures shared by the test layers: module data on disk, and in-process workers.

The example modules keep their data (users, stock) in SQLite files under ``$MODRPC_DATA_DIR``
through process-level singletons (``modules/users/_repo.py``, ``modules/inventory/_stock.py``)
that open on first use and never move. So one data directory serves the whole session, set
before the first worker starts; tests that create users pick unique emails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runtime.config import Settings, load_settings
from runtime.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
MODULES_DIR = ROOT / "modules"
"""The example modules."""
PROBE_MODULES_DIR = ROOT / "tests" / "fixtures" / "worker_modules"
"""Modules that exist only for worker tests (``probe``)."""

StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture(scope="session")
def module_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``$MODRPC_DATA_DIR`` for the whole session, in a temporary folder."""
    path = tmp_path_factory.mktemp("module-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODRPC_DATA_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's internal TLS folder: one development CA, and every identity the tests'
    processes ask for, issued from it on first use (``tls.dev_ca``)."""
    return tmp_path_factory.mktemp("tls")


@pytest.fixture
def worker_settings(tmp_path: Path, module_data_dir: Path, tls_dir: Path) -> Callable[..., Settings]:
    """Settings for workers of one test: a SQLite store in ``tmp_path`` shared by every worker
    built from it, the in-memory fabric, audit records in the store, the session's TLS folder;
    ``overrides`` win."""

    def make(**overrides: Any) -> Settings:
        defaults: dict[str, Any] = {
            "store_url": f"sqlite:///{tmp_path}/store.db",
            "fabric_url": "memory://",
            "modules_dir": MODULES_DIR,
            "drain_seconds": 2.0,
            "observability": {"audit_sink": "store"},
            "tls": {"dir": tls_dir},
        }
        if "tls" in overrides:  # edge settings of a test keep the session's internal folder
            overrides = {**overrides, "tls": {"dir": tls_dir, **overrides["tls"]}}
        return load_settings(**{**defaults, **overrides})

    return make


@pytest.fixture
async def start_worker(worker_settings: Callable[..., Settings]) -> AsyncIterator[StartWorker]:
    """Start :class:`Worker` s on 127.0.0.1 port 0; every one started is stopped afterwards.

    ``await start_worker("users")`` uses :func:`worker_settings`; pass ``settings=`` or
    ``modules_dir=`` (e.g. :data:`PROBE_MODULES_DIR`) to change them.
    """
    started: list[Worker] = []

    async def start(
        module: str, *, settings: Settings | None = None, modules_dir: Path | None = None
    ) -> Worker:
        worker = Worker(
            module,
            settings or worker_settings(),
            host="127.0.0.1",
            port=0,
            modules_dir=modules_dir,
        )
        started.append(worker)
        await worker.start()
        return worker

    yield start
    for worker in reversed(started):
        await worker.stop(0.5)


# -- the gateway's tests ---------------------------------------------------------------------------
# Fixtures for tests/*/test_gateway_* and test_up_*: a gateway in this process in front of
# in-process workers, all sharing the test's SQLite store (see ``worker_settings``).

from tests.fixtures.gateway_modules import build_trees  # noqa: E402 - this section's own imports
from tests.fixtures.gateway_modules.stack import GatewayStack  # noqa: E402


@pytest.fixture(scope="session")
def gw_modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The gateway tests' module trees with their versions recorded, by tree name.

    ``main`` holds ``tally``, ``notes`` and ``relabel``; ``side_v1`` and ``side_v2`` hold the two
    ``clock`` modules. See :mod:`tests.fixtures.gateway_modules`.
    """
    return build_trees(tmp_path_factory.mktemp("gateway-modules"))


@pytest.fixture
def gw_settings(worker_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Settings for a gateway (and its workers) of one test: :func:`worker_settings` without the
    fixed admin port 9464, so tests never collide on it; ``overrides`` win."""

    def make(**overrides: Any) -> Settings:
        return worker_settings(**{"admin_port": 0, **overrides})

    return make


@pytest.fixture
async def gw_stack(
    gw_settings: Callable[..., Settings], start_worker: StartWorker
) -> AsyncIterator[GatewayStack]:
    """Workers and gateways on 127.0.0.1 port 0 sharing the test's store; all stopped afterwards
    (gateways first, then workers)."""
    stack = GatewayStack(gw_settings, start_worker)
    yield stack
    await stack.close()



@pytest.fixture(scope="session")
def span_exporter() -> Iterator[InMemorySpanExporter]:
    """Every span this process finishes, from the global tracer provider.

    Gateways and workers trace through the global provider, which can be set only once per
    process: it is set here (or, when something set one already, extended) before they start.
    """
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


# -- reaching workers directly ---------------------------------------------------------------------
# Workers take mutual TLS only. A test that calls one directly does so as some identity of the
# session's CA: the gateway by default (whose x-modrpc-principal header a worker believes).

from runtime.identity import Peer  # noqa: E402 - this section's own imports
from runtime.tls import InternalTls  # noqa: E402

AS_GATEWAY = Peer.gateway()
EVERY_ROLE = (
    "users:read", "users:write", "orders:read", "orders:write", "inventory:write",
    "notifications:read", "tally:read", "tally:admin", "limited:call", "shelf:count", "feed:write",
    "snapshots:take",
)  # fmt: skip
"""Every role the test modules' methods require, and the one that may ask for snapshots
(:data:`SNAPSHOT_ROLES`)."""

SNAPSHOT_ROLES = {"snapshot_roles": ["snapshots:take"]}
"""``auth`` settings under which ``x-flags: snapshot`` is honoured for the role in EVERY_ROLE."""


def principal_says(subject: str = "ada", *roles: str) -> tuple[str, str]:
    """The ``x-modrpc-principal`` pair a gateway would send for ``subject`` with ``roles``."""
    from runtime.identity import Principal, principal_header

    return ("x-modrpc-principal", principal_header(Principal(subject, tuple(roles), "jwt")))


class _Principal(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):  # type: ignore[misc]
    """Adds the gateway's principal header to every call, of any shape, that does not bring its
    own: the gateway sends it on streams as on unary calls."""

    def __init__(self, pair: tuple[str, str]) -> None:
        self._pair = pair

    def _said(self, details: Any) -> Any:
        metadata = list(details.metadata or ())
        if all(key != self._pair[0] for key, _ in metadata):
            metadata.append(self._pair)
        return details._replace(metadata=metadata)

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._said(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._said(details), request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._said(details), requests)

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._said(details), requests)


Dial = Callable[..., grpc.aio.Channel]


@pytest.fixture
def dial(tls_dir: Path) -> Dial:
    """``dial(worker)`` (or ``dial(address, module)``): a mutual-TLS channel to a worker as the
    gateway would open it (the worker must prove it serves ``module``), each call made for a
    principal holding ``roles`` (default: every role the test modules use). ``as_peer`` dials
    as another identity of the session's CA instead (then no principal header is added)."""
    return make_dial(tls_dir)


def make_dial(tls_dir: Path) -> Dial:
    """:func:`dial` for the CA and identities in ``tls_dir``."""

    def make(
        target: Any,
        module: str | None = None,
        *,
        as_peer: Peer = AS_GATEWAY,
        roles: Sequence[str] = EVERY_ROLE,
    ) -> grpc.aio.Channel:
        address = target if isinstance(target, str) else target.address
        module = module or target.module
        tls = InternalTls.load(tls_dir, as_peer, dev_ca=True)
        interceptors = [_Principal(principal_says("ada", *roles))] if as_peer == AS_GATEWAY else []
        return grpc.aio.secure_channel(
            address,
            tls.channel_credentials(),
            options=tls.channel_options(Peer.module(module)),
            interceptors=interceptors,
        )

    return make


def serve_as(server: grpc.aio.Server, module: str, tls_dir: Path, host: str = "127.0.0.1") -> int:
    """Bind ``server`` on a free port with ``module``'s certificate, mutual TLS: a stand-in
    worker the gateway will talk to. Returns the port."""
    tls = InternalTls.load(tls_dir, Peer.module(module), dev_ca=True)
    return server.add_secure_port(f"{host}:0", tls.server_credentials())
