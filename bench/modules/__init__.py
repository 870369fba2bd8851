"""Modules that exist only for the benchmarks.

``echo`` is the measured call: a handler that does no I/O, so what a run measures is the
runtime (gateway policy, module client, the worker's whole request lifecycle), not a database.
Its version files are recorded with :func:`runtime.codegen.generate`, like any module's; after
changing its models, run ``python -m bench.modules`` to record a new version.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from runtime.codegen import GenResult, ModuleSource, generate
from runtime.manifest import load_module

__all__ = ["MODULES_DIR", "record_versions"]

MODULES_DIR = Path(__file__).resolve().parent
"""The modules folder the benchmark's workers and gateway serve."""


def record_versions(date: str | None = None) -> GenResult:
    """Record a version of every bench module whose schema changed, as ``modrpc gen`` would.

    The generated ``proto/`` and ``gen/`` trees are not needed by the benchmark (workers build
    their descriptors from the version files), so they are written to a temporary folder.
    """
    sources = []
    for directory in sorted(p for p in MODULES_DIR.iterdir() if (p / "module.toml").is_file()):
        loaded = load_module(directory)
        sources.append(ModuleSource(loaded.name, directory, loaded.schema))
    with tempfile.TemporaryDirectory(prefix="modrpc-bench-gen-") as root:
        return generate(Path(root), sources, date=date)
