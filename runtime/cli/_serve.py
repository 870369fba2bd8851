"""``modrpc up``, ``modrpc gateway`` and ``modrpc worker``.

``up`` is a small supervisor: one ``modrpc worker`` child process per module, each restarted
(with backoff, and logged) when it crashes, plus the gateway in this process. It prints one line
per worker with its address, then a line containing ``ready`` once calls succeed. SIGTERM or
Ctrl-C drains the gateway, then stops every child with SIGTERM and waits for it.

Before anything starts, ``up`` makes sure every identity it runs has its certificate in
``tls.dir`` (with ``tls.dev_ca``, the default: a development CA and certificates for the gateway,
the hub, each module and a ``client:developer`` for grpcurl), so every hop between its processes
is mutual TLS from the first call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.cli._supervise import READY_PREFIX, Fleet
from runtime.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from runtime.fabric import FabricHub
    from runtime.identity import Peer
    from runtime.store import ManifestStore

__all__ = ["run"]

log = logging.getLogger("modrpc.up")



def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "port", None) is not None and args.command != "worker":  # --port 0: any free port
        overrides["gateway_port"] = args.port
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "modules", None):
        overrides["modules_dir"] = Path(args.modules)
    return load_settings(args.config, **overrides)


def run(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"modrpc {args.command}: {exc}", file=sys.stderr)
        return 2
    from runtime.observability import configure_logging, configure_tracing, wants_console

    configure_logging(settings.log_level, console=wants_console(settings.log_format))
    _harden_process(settings)
    name = f"modrpc-{args.command}" + (f"-{args.module}" if args.command == "worker" else "")
    endpoint = settings.observability.otlp_endpoint
    if endpoint:
        configure_tracing(name, otlp_endpoint=endpoint, install_global=True)
    # Without an exporter, recorded spans would go nowhere: the API's non-recording spans still
    # carry the caller's trace context on to workers and module calls, at a fraction of the cost.
    from runtime.cli._ports import PortInUse, hold_ports

    settings = settings.model_copy(update={"modules_dir": Path(settings.modules_dir).resolve()})
    try:
        held = hold_ports(args.command, settings, getattr(args, "port", None))
    except PortInUse as exc:
        print(f"modrpc {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # an address this machine does not have, say
        print(f"modrpc {args.command}: cannot listen on {settings.host}: {exc.strerror}", file=sys.stderr)
        return 1
    main = {"worker": _worker, "gateway": _gateway, "up": _up}[args.command]
    with held:
        try:
            return asyncio.run(main(args, settings))
        except KeyboardInterrupt:
            return 0


STATE_DIR = Path(".modrpc")
"""The runtime's own state in a project (store, audit trail, module data, secrets by default)."""

WORKERS_SHARE = 1.5
"""Seconds of ``drain_seconds`` that Ctrl-C keeps back from the gateway's drain for the workers':
by then the gateway's calls are done, so a worker has only its own to finish and its exit."""
GATEWAY_CLOSE_SECONDS = 0.5
"""What the gateway may take past its grace to close its server, channels and tasks."""


def _harden_process(settings: Settings) -> None:
    """What every serving process does first: files it creates are private, and the open-file
    limit is as high as the administrator allows (workers inherit both from ``modrpc up``).

    A umask of 077 covers every file the process or a module creates, beyond those the runtime
    creates ``0600`` itself; the connection limits are then kept below the raised file limit
    (``runtime.limits``), so a flood of connections cannot take the descriptors the process
    needs for its own files and calls.
    """
    from runtime.files import private_tree
    from runtime.limits import raise_open_file_limit

    os.umask(0o077)
    limit = raise_open_file_limit()
    log.debug("open-file limit %d", limit)
    # The runtime's own folders, whole (the TLS folder when the runtime's development CA fills
    # it): what an older version or a hand-made copy left readable by others (keys, the store,
    # spools, locks) is narrowed before anything reads it.
    folders = (STATE_DIR, settings.data_dir) + ((settings.tls.dir,) if settings.tls.dev_ca else ())
    for folder in dict.fromkeys(folders):
        narrowed = private_tree(folder)
        if narrowed:
            log.warning(
                "%s: took group and other permissions off %d files and folders (now 0600 and 0700)",
                folder, narrowed,
            )  # fmt: skip


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _fail(what: str, exc: BaseException) -> int:
    print(f"modrpc: {what}: {exc}", file=sys.stderr)
    return 1


async def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from runtime.errors import ModrpcError
    from runtime.worker import Worker

    stop = _stop_event()
    worker = Worker(args.module, settings, port=args.port)
    try:
        address = await worker.start()
    except (ModrpcError, OSError, RuntimeError, ValueError) as exc:  # ValueError: TLS files, config
        await worker.stop(0)
        return await _fail(f"worker {args.module} could not start", exc)
    print(f"{READY_PREFIX}{args.module} {address}", flush=True)
    watchdog = asyncio.create_task(_exit_with_parent(stop))
    await stop.wait()
    watchdog.cancel()
    await worker.stop()
    return 0


async def _exit_with_parent(stop: asyncio.Event) -> None:
    """A worker started by ``modrpc up`` stops when its supervisor dies, even by SIGKILL."""
    parent = os.environ.get("MODRPC_SUPERVISOR_PID")
    if not parent:
        return
    while os.getppid() == int(parent):  # noqa: ASYNC110 - no event tells us the parent died
        await asyncio.sleep(1.0)
    log.warning("supervisor %s is gone; stopping", parent)
    stop.set()


async def _gateway(args: argparse.Namespace, settings: Settings) -> int:
    from runtime.errors import ModrpcError
    from runtime.gateway import Gateway

    stop = _stop_event()
    gateway = Gateway(settings)
    try:
        address = await gateway.start()
    except (ModrpcError, OSError, RuntimeError, ValueError) as exc:  # ValueError: TLS files, config
        await gateway.stop(0)
        return await _fail("gateway could not start", exc)
    print(f"gateway listening on {address}", flush=True)
    playground = _playground(gateway)
    announce = asyncio.create_task(_announce_ready(gateway, address, playground))
    await stop.wait()
    announce.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await announce
    if playground is not None:
        await playground.close()
    await gateway.stop()
    return 0


def _playground(gateway: Any) -> Any:
    """The playground on the gateway's admin port, when the settings have it on (else None)."""
    from runtime.playground import Playground

    return Playground.attach(gateway)


def _beside(playground: Any) -> str:
    """What the ready line says of the playground: where to open it."""
    return f"; playground on {playground.url}" if playground is not None else ""


async def _announce_ready(gateway: Any, address: str, playground: Any = None) -> None:
    """Print the ready line once the workers known to the store serve, however long that takes.

    The gateway alone serves whatever registers; workers may well start after it, so waiting
    longer than ``wait_ready``'s timeout is normal, not a failure.
    """
    from runtime.errors import Unavailable

    while True:
        try:
            await gateway.wait_ready(timeout=30.0)
        except Unavailable:
            log.info("gateway on %s: no worker has registered yet; still waiting", address)
            continue
        print(f"ready: gateway on {address}{_beside(playground)}", flush=True)
        return


class _DeclaredTopics:
    """The hub's policy: a module publishes and subscribes only to the topics its
    ``module.toml`` declares (the same rule its ``gctx`` enforces in its own process). A module
    it does not know yet (added under ``--reload``) makes it read the modules folder again."""

    def __init__(self, modules_dir: Path) -> None:
        self._modules_dir = modules_dir
        self._caps = self._read()

    def _read(self) -> dict[str, Any]:
        from runtime.manifest import CapabilitySet, discover_modules, load_manifest

        return {
            path.name: CapabilitySet.from_manifest(load_manifest(path / "module.toml"))
            for path in discover_modules(self._modules_dir)
        }

    def check(self, peer: Peer, action: str, topic: str) -> None:
        from runtime.errors import PermissionDenied

        caps = self._caps.get(peer.name)
        if caps is None:
            self._caps = self._read()
            caps = self._caps.get(peer.name)
        if caps is None:
            raise PermissionDenied(f"{peer} is not a module of this project")
        if action == "publish":
            caps.require_publish(topic)
        else:
            caps.require_subscribe(topic)


def _identities(settings: Settings, modules: list[str]) -> None:
    """Every identity this ``up`` runs, in ``tls.dir`` before any process needs one (with
    ``tls.dev_ca``: issued now, once, instead of by processes racing for the lock)."""
    from runtime.identity import Peer
    from runtime.tls import ensure_identity

    peers = [Peer.gateway(), Peer.hub(), Peer.client("developer"), *(Peer.module(m) for m in modules)]
    for peer in peers:
        if peer.kind == "client" and not settings.tls.dev_ca:
            continue  # a developer's certificate is a development convenience only
        ensure_identity(Path(settings.tls.dir), peer, dev_ca=settings.tls.dev_ca)


async def _memory_hub(settings: Settings) -> FabricHub | None:
    """On the embedded fabric, the one in-memory fabric every worker of this ``up`` shares.

    It lives in this process and is served to the workers on a loopback port (``hub://``), over
    mutual TLS as the ``hub`` identity; with a real fabric (NATS) there is nothing to share and
    this is None.
    """
    if not settings.fabric_url.startswith("memory://"):
        return None
    from runtime.fabric import FabricHub, open_fabric
    from runtime.identity import Peer
    from runtime.tls import InternalTls

    tls = InternalTls.load(Path(settings.tls.dir), Peer.hub(), dev_ca=settings.tls.dev_ca)
    fabric = open_fabric(settings.fabric_url)
    await fabric.start()
    hub = FabricHub(fabric, tls=tls, policy=_DeclaredTopics(Path(settings.modules_dir)))
    await hub.start()
    return hub


async def _close_hub(hub: FabricHub) -> None:
    await hub.stop()
    await hub.fabric.close()


async def _preflight(settings: Settings) -> None:
    """Reach the store and the fabric once, so a dead backend is one clear error, not N; and
    refuse transformer stubs nobody filled in, naming each file, before any worker starts."""
    from runtime.errors import FailedPrecondition
    from runtime.fabric import open_fabric
    from runtime.manifest import discover_modules
    from runtime.store import open_store
    from runtime.versions import unfilled_transformers

    stubs = [
        problem
        for module_dir in discover_modules(Path(settings.modules_dir))
        for problem in unfilled_transformers(module_dir, root=Path.cwd())
    ]
    if stubs:
        raise FailedPrecondition("unfilled transformer stubs:\n  " + "\n  ".join(stubs))

    store = open_store(settings.store_url)
    try:
        await store.start()
    finally:
        await store.close()
    if not settings.fabric_url.startswith("memory://"):
        from runtime.identity import Peer
        from runtime.tls import InternalTls

        # As the gateway: a tls:// NATS takes runtime identities only.
        tls = InternalTls.load(Path(settings.tls.dir), Peer.gateway(), dev_ca=settings.tls.dev_ca)
        fabric = open_fabric(settings.fabric_url, tls=tls)
        try:
            await fabric.start()
        finally:
            await fabric.close()


async def _up(args: argparse.Namespace, settings: Settings) -> int:
    from runtime.errors import ModrpcError
    from runtime.gateway import Gateway
    from runtime.manifest import discover_modules

    if getattr(args, "embedded", False):
        if getattr(args, "reload", False):
            # Reloading restarts worker processes; embedded modules live in this one.
            print("modrpc up: --reload restarts worker processes, and --embedded has none: use one or the other",
                  file=sys.stderr)
            return 2
        return await _up_embedded(settings)
    stop = _stop_event()
    modules_dir = Path(settings.modules_dir)  # absolute: made so by run()
    module_dirs = discover_modules(modules_dir)
    modules = [p.name for p in module_dirs]
    if not modules:
        print(f"modrpc up: no modules under {modules_dir}/ (`modrpc new module NAME` adds one)", file=sys.stderr)
        return 2
    gateway = Gateway(settings)

    async def forget(pid: int, address: str) -> None:
        store = gateway.store  # open once the gateway has started
        if store is None:
            return
        try:
            for record in await store.list_workers():
                if record.pid == pid and record.address == address:
                    await store.deregister_worker(record.id)
                    log.info("deregistered worker %s of the dead process %d", record.id, pid)
        except Exception as exc:  # the store may be down too; the record then goes stale instead
            log.warning("could not deregister the workers of dead process %d: %s", pid, exc)

    async def restarted() -> None:
        """Route to a restarted worker before saying it is back, not on the next refresh."""
        if gateway.store is None:
            return
        try:
            await gateway.refresh()
        except Exception as exc:  # the periodic refresh will pick the worker up
            log.warning("could not refresh routes after a restart: %s", exc)

    async def removed(module: str) -> None:
        if gateway.store is not None:
            await _mark_removed(gateway.store, module)

    fleet = Fleet(settings, args.config, forget, restarted)
    hub = None
    watcher: asyncio.Task[None] | None = None
    playground = None
    try:
        try:
            started = time.monotonic()
            await _preflight(settings)
            _identities(settings, modules)
            hub = await _memory_hub(settings)
            if hub is not None:
                os.environ["MODRPC_FABRIC_URL"] = hub.url
            for module, address in await fleet.add(module_dirs):
                print(f"{module} {address}", flush=True)
            address = await gateway.start()
            playground = _playground(gateway)
            await _sweep_removed(gateway, set(modules))
            await gateway.wait_ready(modules)
            elapsed = time.monotonic() - started
            _say_how_to_reach_workers(settings)
            if getattr(args, "reload", False):
                from runtime.cli._reload import watch

                watcher = asyncio.create_task(
                    watch(fleet, Path.cwd(), modules_dir, refresh=gateway.refresh, removed=removed, stop=stop)
                )
                # The watcher's first step registers the folders with the OS: done before "ready",
                # so an edit made the moment it is printed is seen.
                for _ in range(3):
                    await asyncio.sleep(0)
            print(f"ready: gateway on {address} ({fleet.count} worker{'' if fleet.count == 1 else 's'}, {elapsed:.1f}s){_beside(playground)}", flush=True)
        except (ModrpcError, OSError, RuntimeError, ValueError) as exc:
            return await _fail("up failed", exc)
        await stop.wait()
        print("shutting down", flush=True)
        return 0
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        # Whatever happened above, no worker outlives this process, and all of it ends within
        # drain_seconds: the gateway drains first (its calls need the workers), keeping back
        # WORKERS_SHARE for the workers, which then drain what is left of the time and are
        # killed when it is up.
        finish_by = time.monotonic() + settings.drain_seconds
        if playground is not None:
            await playground.close()
        gateway_grace = max(0.0, settings.drain_seconds - WORKERS_SHARE)
        try:
            async with asyncio.timeout(gateway_grace + GATEWAY_CLOSE_SECONDS):
                await gateway.stop(gateway_grace)
        except TimeoutError:
            log.error("the gateway did not stop within %.1fs; stopping the workers anyway", gateway_grace)
        await fleet.stop(grace=max(0.0, finish_by - time.monotonic()), kill_margin=0.0)
        if hub is not None:
            await _close_hub(hub)


async def _mark_removed(store: ManifestStore, module: str) -> None:
    from runtime.versions import mark_removed

    try:
        if await mark_removed(store, module, now=time.time()):
            log.info("module %s is no longer in the project: marked removed in %s", module, store.url)
    except Exception as exc:  # the store may be down; the module then stays listed until next time
        log.warning("could not mark module %s removed: %s", module, exc)


async def _sweep_removed(gateway: Any, present: set[str]) -> None:
    """Modules the store knows that left the project while nothing ran: marked removed.

    Only those no worker is registered for, since a worker on another host may serve a module
    this project does not have; the gateway drops them from its routes and reflection.
    """
    store = gateway.store
    if store is None:
        return
    serving = {w.module for w in await store.list_workers()}
    swept = False
    for module in await store.modules():
        if module not in present and module not in serving:
            await _mark_removed(store, module)
            swept = True
    if swept:
        await gateway.refresh()


def _say_how_to_reach_workers(settings: Settings) -> None:
    """Workers take mutual TLS only; tell a developer which files let grpcurl in."""
    folder = Path(settings.tls.dir)
    if not (folder / "client-developer.crt").is_file():
        return
    print(
        f"workers take mutual TLS only; reach one with grpcurl -cacert {folder}/ca.crt "
        f"-cert {folder}/client-developer.crt -key {folder}/client-developer.key ADDRESS list",
        flush=True,
    )


async def _up_embedded(settings: Settings) -> int:
    """``modrpc up --embedded``: every module served inside the gateway's own process.

    Each module still runs as a full :class:`~runtime.worker.Worker` (its lifecycle, store
    registration, health, and a port of its own for direct calls), but the gateway reaches it
    through :class:`~runtime.transport.InProcessModules`: no socket, no second gRPC server, no
    second event loop. The modules share one in-memory fabric through a hub, as in ``up``.
    """
    from runtime.errors import ModrpcError
    from runtime.gateway import Gateway
    from runtime.manifest import discover_modules
    from runtime.transport import InProcessModules
    from runtime.worker import Worker

    stop = _stop_event()
    modules = [p.name for p in discover_modules(Path(settings.modules_dir))]
    if not modules:
        print(f"modrpc up: no modules under {settings.modules_dir}/", file=sys.stderr)
        return 2
    local = InProcessModules()
    workers: list[Worker] = []
    gateway = Gateway(settings, local=local)
    hub = None
    playground = None
    try:
        try:
            started = time.monotonic()
            await _preflight(settings)
            _identities(settings, modules)
            worker_settings = settings
            hub = await _memory_hub(settings)
            if hub is not None:
                worker_settings = settings.model_copy(update={"fabric_url": hub.url})
            for module in modules:
                worker = Worker(module, worker_settings, local=local)
                workers.append(worker)
                print(f"{module} {await worker.start()} (in process)", flush=True)
            address = await gateway.start()
            playground = _playground(gateway)
            await gateway.wait_ready(modules)
            elapsed = time.monotonic() - started
            print(f"ready: gateway on {address} ({len(modules)} modules in process, {elapsed:.1f}s){_beside(playground)}", flush=True)
        except (ModrpcError, OSError, RuntimeError, ValueError) as exc:
            return await _fail("up failed", exc)
        await stop.wait()
        print("shutting down", flush=True)
        return 0
    finally:
        if playground is not None:
            await playground.close()
        await gateway.stop()
        for worker in reversed(workers):
            await worker.stop()
        if hub is not None:
            await _close_hub(hub)
