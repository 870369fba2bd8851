"""``modrpc gen [--check]`` and ``modrpc versions MODULE``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.codegen import GenResult, ModuleSource, VersionHistory, generate
from runtime.errors import SchemaError
from runtime.gtype import UnsupportedType, diff
from runtime.manifest import discover_modules, load_manifest, load_module
from runtime.wire import WireSchemaError

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    return _gen(args) if args.command == "gen" else _versions(args)


def _gen(args: argparse.Namespace) -> int:
    root: Path = args.root.resolve()
    try:
        sources = [
            ModuleSource(name=loaded.name, directory=loaded.directory, schema=loaded.schema)
            for loaded in (load_module(d) for d in discover_modules(root / args.modules))
        ]
        result = generate(root, sources, check=args.check, date=args.date)
    except (SchemaError, UnsupportedType, WireSchemaError, ValueError) as exc:
        print(f"modrpc gen: {exc}", file=sys.stderr)
        return 2
    return _report(result, check=args.check)


def _report(result: GenResult, *, check: bool) -> int:
    if check:
        if result.ok:
            print("modrpc gen --check: generated code is up to date")
            return 0
        print("modrpc gen --check: generated code is stale; run `modrpc gen`:", file=sys.stderr)
        for line in result.stale:
            print(f"  {line}", file=sys.stderr)
        return 1
    for line in result.recorded:
        print(f"recorded version {line}")
    for line in result.stubs:
        print(f"wrote transformer stub {line} (fill it in: it raises until you do)")
    print("wrote " + " ".join(result.written))
    return 0


def _versions(args: argparse.Namespace) -> int:
    root: Path = args.root.resolve()
    directory = root / args.modules / args.module
    manifest_path = directory / "module.toml"
    if not manifest_path.exists():
        print(f"modrpc versions: no module {args.module!r} (no {manifest_path})", file=sys.stderr)
        return 2
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
