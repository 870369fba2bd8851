"""``modrpc gen [--check]`` and ``modrpc versions MODULE``.

``modrpc versions MODULE`` lists the versions recorded next to the module. With ``--store``,
``--retire``, ``--dry-run``, ``--keep``, ``--unkeep`` or ``--retire-version`` it works on the
manifest store instead: the version lifecycle (hot, warm, cold, retired) of the running system.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.codegen import GenResult, ModuleSource, generate
from runtime.errors import ExpectedError, InvalidArgument, NotFound, SchemaError
from runtime.files import private_file
from runtime.gtype import UnsupportedType, diff
from runtime.manifest import discover_modules, load_manifest, load_module
from runtime.versions import VersionHistory
from runtime.wire import WireSchemaError

if TYPE_CHECKING:  # the store and its drivers load only when the lifecycle is managed
    from runtime.store import ManifestStore
    from runtime.versions import Override, RetirementDecision

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    return _gen(args) if args.command == "gen" else _versions(args)


def modules_dir(args: argparse.Namespace) -> Path:
    """``--modules``, else ``modules_dir`` of the project's settings (``modules``)."""
    if args.modules is not None:
        return Path(args.modules)
    from runtime.config import load_settings

    return Path(load_settings().modules_dir).resolve()


def _gen(args: argparse.Namespace) -> int:
    root: Path = args.project
    try:
        folder = modules_dir(args)
        found = discover_modules(folder)
        if not found:
            print(f"modrpc gen: no modules under {folder} (a module is a folder with module.toml)", file=sys.stderr)
            return 2
        sources = [
            ModuleSource(name=loaded.name, directory=loaded.directory, schema=loaded.schema)
            for loaded in (load_module(d) for d in found)
        ]
        with _one_gen_at_a_time(root):
            result = generate(root, sources, check=args.check, date=args.date)
    except (SchemaError, UnsupportedType, WireSchemaError, ValueError) as exc:
        print(f"modrpc gen: {exc}", file=sys.stderr)
        return 2
    return _report(result, check=args.check)


@contextlib.contextmanager
def _one_gen_at_a_time(root: Path) -> Iterator[None]:
    """Hold the project's gen lock: `modrpc up --reload` and a person may both run gen at once."""
    lock = private_file(root / ".modrpc" / "gen.lock")  # .modrpc is the runtime's: 0700 from the start
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _report(result: GenResult, *, check: bool) -> int:
    if check:
        if result.ok:
            print("modrpc gen --check: generated code is up to date")
            return 0
        print("modrpc gen --check: generated code is stale (run `modrpc gen`) or a transformer is unfilled:", file=sys.stderr)
        for line in result.stale:
            print(f"  {line}", file=sys.stderr)
        return 1
    for line in result.recorded:
        print(f"recorded version {line}")
    for line in result.stubs:
        print(f"wrote transformer stub {line} (fill it in: it raises until you do)")
    for line in result.unfilled:
        print(f"unfilled: {line}")
    for line in result.notes:
        print(line)
    print("wrote " + " ".join(result.written))
    return 0


def _versions(args: argparse.Namespace) -> int:
    if args.store or args.retire or args.dry_run or args.keep or args.unkeep or args.retire_version:
        return _lifecycle(args)
    try:
        directory = modules_dir(args) / args.module
    except ValueError as exc:
        print(f"modrpc versions: {exc}", file=sys.stderr)
        return 2
    manifest_path = directory / "module.toml"
    if not manifest_path.exists():
        # A module removed from the project still has its versions in the manifest store (where
        # `--retire` finds them): list those, as `--store` would.
        args.no_folder = manifest_path
        return _lifecycle(args)
    labels = dict(load_manifest(manifest_path).versions)
    history = VersionHistory.load(args.module, directory / "versions")
    if not history.records:
        print(f"{args.module}: no recorded versions; run `modrpc gen`")
        return 0
    by_version: dict[str, list[str]] = {}
    for label, version in labels.items():
        by_version.setdefault(version, []).append(label)
    by_version.setdefault(history.records[-1].id, []).append("latest")
    print(f"{'VERSION':<28} {'LABELS':<20} STEP FROM PREVIOUS")
    previous = None
    for record in history.records:
        if previous is None:
            step = "first version"
        else:
            changes = diff(previous.schema, record.schema)
            kinds = sorted({f"{c.kind} {c.path}" for c in changes.changes if c.breaking})
            step = ("BREAKING: " + "; ".join(kinds)) if changes.breaking else "compatible"
        tags = ",".join(sorted(by_version.get(record.id, [])))
        print(f"{record.id:<28} {tags or '-':<20} {step}")
        previous = record
    return 0


# -- the lifecycle, in the manifest store --------------------------------------------------------

_ROW = "{:<28} {:<20} {:<8} {:<9} {}"
_PLAN = "{:<28} {:<8} {:<9} {}"


def _lifecycle(args: argparse.Namespace) -> int:
    from runtime.config import ConfigError, load_settings

    pending: dict[str, Override | None] = {}
    wanted: tuple[tuple[list[str], Override | None], ...] = (
        (args.keep, "keep"), (args.unkeep, None), (args.retire_version, "retire"),
    )  # fmt: skip
    for versions, override in wanted:
        for version in versions:
            if pending.get(version, override) != override:
                print(f"modrpc versions: {version!r} is given two overrides", file=sys.stderr)
                return 2
            pending[version] = override
    try:
        url = args.store or load_settings().store_url
        return asyncio.run(_manage(args, url, pending, now=time.time()))
    except ConfigError as exc:
        print(f"modrpc versions: {exc}", file=sys.stderr)
        return 2
    except ExpectedError as exc:
        print(f"modrpc versions: {exc.message}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidArgument | NotFound) else 1


async def _manage(
    args: argparse.Namespace, url: str, pending: dict[str, Override | None], *, now: float
) -> int:
    from runtime.store import open_store
    from runtime.versions import (
        apply_retirement,
        refresh_states,
        retirement_plan,
        set_override,
    )

    module: str = args.module
    async with open_store(url) as store:
        known = {v.id for v in await store.list_versions(module)}
        folder = getattr(args, "no_folder", None)
        if not known:
            if folder is not None:
                raise NotFound(f"no module {module!r}: no {folder}, and no versions in the store at {store.url}")
            raise NotFound(f"module {module!r} has no versions in the store at {store.url}")
        if folder is not None:
            print(f"{module}: no {folder}; its versions in the manifest store at {store.url}:")
        unknown = sorted(set(pending) - known)
        if unknown:  # refuse before writing any override, so nothing is half done
            raise NotFound(f"module {module!r} has no version {unknown[0]!r} in {store.url}")
        if args.dry_run:
            plan = await retirement_plan(store, module, now=now, overrides=pending)
            for version, override in pending.items():
                print(f"would {_override_text(override, version)}")
            print(f"{module}: dry run against {store.url}; nothing was changed")
            _print_decisions(plan.decisions, done=False)
            return 0
        for version, override in pending.items():
            await set_override(store, module, version, override)
            print(_override_text(override, version))
        if args.retire:
            await refresh_states(store, module, now=now)
            plan = await retirement_plan(store, module, now=now)
            if not plan.to_retire:
                print(f"{module}: nothing to retire")
            else:
                _print_decisions(await apply_retirement(store, module, plan), done=True)
            return 0
        if pending:
            print(f"overrides take effect at the next `modrpc versions {module} --retire`")
            return 0
        await _list(store, module, now)
    return 0


def _override_text(override: Override | None, version: str) -> str:
    if override is None:
        return f"clear the override of {version}"
    return f"record override {override!r} for {version}"


def _print_decisions(decisions: Sequence[RetirementDecision], *, done: bool) -> None:
    print(_PLAN.format("VERSION", "STATE", "DECISION", "REASON"))
    for d in decisions:
        verb = ("retired" if done else "retire") if d.retire else "keep"
        print(_PLAN.format(d.version, d.state, verb, d.reason))


async def _list(store: ManifestStore, module: str, now: float) -> None:
    from runtime.versions import UsageLedger, classify, is_retired

    ledger = UsageLedger(module)
    await ledger.refresh(store)
    usage = ledger.usage()
    records = await store.list_versions(module)
    states = classify({r.id: usage[r.id] for r in records if r.id in usage}, now=now)
    print(_ROW.format("VERSION", "LABELS", "STATE", "OVERRIDE", "LAST CALL"))
    for record in records:
        state = "retired" if is_retired(record.metadata) else states.get(record.id, "cold")
        seen = usage[record.id].last_seen if record.id in usage else None
        last = "never" if seen is None else f"{datetime.fromtimestamp(seen, UTC):%Y-%m-%dT%H:%M:%SZ}"
        override = record.metadata.get("override") or "-"
        print(_ROW.format(record.id, ",".join(record.labels) or "-", state, override, last))
