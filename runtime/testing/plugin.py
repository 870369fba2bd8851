"""The modrpc pytest plugin, loaded by pytest through the ``pytest11`` entry point.

It puts the project's root (the folder with ``modrpc.toml`` at or above pytest's rootdir) first
on ``sys.path``, so tests import the project's ``modules`` and ``gen``, and offers fixtures:

- ``modrpc_project``: the :class:`~runtime.project.Project` under test;
- ``module_harness``: ``module_harness("users", **fakes)`` gives a
  :class:`~runtime.testing.ModuleHarness` of one of the project's modules (or of a folder),
  closed after the test;
- ``manual_clock``: a :class:`~runtime.testing.ManualClock` to pass as ``clock=``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.project import Project, ProjectError, find_project

__all__ = ["manual_clock", "modrpc_project", "module_harness", "pytest_configure"]


def _project(config: pytest.Config) -> Project | None:
    try:
        return find_project(Path(config.rootpath))
    except ProjectError:
        return None


def pytest_configure(config: pytest.Config) -> None:
    project = _project(config)
    if project is not None and str(project.root) not in sys.path:
        sys.path.insert(0, str(project.root))


@pytest.fixture
def modrpc_project(pytestconfig: pytest.Config) -> Project:
    """The modrpc project the tests run in (found from pytest's rootdir upwards)."""
    project = _project(pytestconfig)
    if project is None:
        pytest.fail(f"no modrpc project at or above {pytestconfig.rootpath} (no modrpc.toml)")
    return project


@pytest.fixture
def manual_clock() -> Any:
    """A wall clock standing at 2025-01-01T00:00:00Z until the test moves it."""
    from runtime.testing import ManualClock

    return ManualClock()


@pytest.fixture
def module_harness(modrpc_project: Project) -> Iterator[Callable[..., Any]]:
    """``module_harness("users", secrets={...}, modules={...})``: a harness of one module.

    A name is a module of the project's ``modules/``; a path is any module folder.
    """
    from runtime.testing import ModuleHarness

    made: list[ModuleHarness] = []

    def make(module: str | Path, **fakes: Any) -> ModuleHarness:
        folder = Path(module) if isinstance(module, Path) or "/" in str(module) else modrpc_project.modules_dir / module
        harness = ModuleHarness(folder, **fakes)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()
