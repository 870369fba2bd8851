"""``modrpc up --reload``: watch the modules, regenerate, restart only the workers affected.

On a change under the modules folder (watched with ``watchfiles``) it runs ``modrpc gen`` in a
process of its own, then:

- a changed module's workers are replaced (new ones first, so calls keep being served), and
  so are the workers of every module that declares it in ``capabilities.modules``, since they
  load its models;
- a new module's workers are started;
- a removed module's workers are stopped and the module is marked removed in the store, so
  gateways drop it.

A failing ``modrpc gen`` (a handler that does not analyse, a breaking change without its
transformer) is logged with gen's own message, and the workers keep serving the code they had.
Edits to a module's ``tests/`` and the files gen writes itself (``versions/``,
``fields.lock.json``) restart nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

from runtime.cli._supervise import Fleet

__all__ = ["ModuleFilter", "watch"]

log = logging.getLogger("modrpc.reload")

_GEN_OUTPUT = frozenset({"versions", "__pycache__", "tests"})


class ModuleFilter(DefaultFilter):
    """Source changes of modules: ``.py`` and ``.toml`` files, and removed folders."""

    def __init__(self, modules_dir: Path) -> None:
        super().__init__()
        self.modules_dir = modules_dir

    def __call__(self, change: Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        try:
            parts = Path(path).relative_to(self.modules_dir).parts
        except ValueError:
            return False
        if not parts or _GEN_OUTPUT.intersection(parts[1:]) or parts[-1] == "fields.lock.json":
            return False
        return change == Change.deleted or parts[-1].endswith((".py", ".toml"))


def touched_modules(modules_dir: Path, paths: set[str]) -> set[str]:
    """The modules (first folder under ``modules_dir``) that the changed ``paths`` belong to."""
    names = set()
    for path in paths:
        parts = Path(path).relative_to(modules_dir).parts
        if len(parts) > 1 or (modules_dir / parts[0]).is_dir() or not parts[0].endswith(".py"):
            names.add(parts[0])
    return names


async def run_gen(project: Path, modules_dir: Path) -> tuple[int, str]:
    """``modrpc gen`` for the modules folder, in its own process; exit code and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runtime.cli", "gen", "--project", str(project), "--modules", str(modules_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=project, env=dict(os.environ),
    )  # fmt: skip
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode("utf-8", "replace").strip()


async def watch(
    fleet: Fleet,
    project: Path,
    modules_dir: Path,
    *,
    refresh: Callable[[], Awaitable[None]],
    removed: Callable[[str], Awaitable[None]],
    stop: asyncio.Event,
) -> None:
    """Reload on every batch of changes until ``stop`` is set."""
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # reload says what it does itself
    log.info("watching %s for changes", modules_dir)
    async for changes in awatch(modules_dir, watch_filter=ModuleFilter(modules_dir), stop_event=stop, step=300):
        touched = touched_modules(modules_dir, {path for _, path in changes})
        if touched:
            try:
                await reload(fleet, project, modules_dir, touched, refresh=refresh, removed=removed)
            except Exception as exc:  # a reload that fails leaves what was running; keep watching
                log.error("reload of %s failed: %s", ", ".join(sorted(touched)), exc)
                print(f"reload failed: {exc}", flush=True)


async def reload(
    fleet: Fleet,
    project: Path,
    modules_dir: Path,
    touched: set[str],
    *,
    refresh: Callable[[], Awaitable[None]],
    removed: Callable[[str], Awaitable[None]],
) -> None:
    from runtime.manifest import discover_modules, load_manifest
    from runtime.versions import unfilled_transformers

    started = time.monotonic()
    code, output = await run_gen(project, modules_dir)
    if code != 0:
        log.error("modrpc gen failed; the workers keep serving the code they had:\n%s", output)
        print(f"reload of {', '.join(sorted(touched))} failed: {output.splitlines()[-1] if output else 'modrpc gen failed'}", flush=True)
        return
    for line in output.splitlines():
        if not line.startswith("wrote gen/"):
            log.info("modrpc gen: %s", line)
    present = {p.name: p for p in discover_modules(modules_dir)}
    # A breaking change gets a transformer stub that raises until filled in: a worker would refuse
    # to start on it, so the reload stops here, naming each stub, as `modrpc up` does at start.
    stubs = [problem for m in sorted(touched & set(present)) for problem in unfilled_transformers(present[m], root=project)]
    if stubs:
        log.error("reload stopped on unfilled transformer stubs; the workers keep serving the code they had")
        print(
            f"reload of {', '.join(sorted(touched))} stopped; the workers keep serving the code they had. "
            "Unfilled transformer stubs:\n  " + "\n  ".join(stubs),
            flush=True,
        )
        return
    running = set(fleet.workers)
    done: list[str] = []
    for module in sorted(running - set(present)):
        await fleet.remove(module)
        await removed(module)
        done.append(f"{module} removed")
    for module, address in await fleet.add([present[m] for m in sorted(set(present) - running)]):
        print(f"{module} {address}", flush=True)
        done.append(f"{module} started")
    changed = touched & running & set(present)
    dependents = {
        name for name, folder in present.items()
        if name in running and changed & set(load_manifest(folder / "module.toml").capabilities.modules)
    }  # fmt: skip
    for module in sorted(changed | dependents):
        await fleet.replace(present[module])
        done.append(f"{module} restarted")
    await refresh()
    if done:
        print(f"reloaded: {', '.join(done)} ({time.monotonic() - started:.1f}s)", flush=True)
