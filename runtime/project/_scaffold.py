"""``modrpc new DIR`` and ``modrpc new module NAME``: a project, or a module, ready to run.

A new project holds one module, ``hello``, with a ``SayHello`` method and its tests. With no
edit, ``modrpc gen --check``, ``modrpc up`` (then grpcurl) and ``pytest`` all work in it. A new
module has the same shape under another name. Existing files are never overwritten.
"""

from __future__ import annotations

import re
from pathlib import Path

from runtime.manifest._names import MODULE_NAME
from runtime.project._root import PROJECT_FILE, Project, ProjectError

__all__ = ["new_module", "new_project"]

_CONFIG = """\
# modrpc project settings: top-level keys, each optional. `modrpc config` prints every setting in
# effect and where it came from (default, this file, or a MODRPC_* environment variable).
# For example:
#   gateway_port = 50051
#   store_url = "sqlite:///.modrpc/store.db"
#
#   [auth]
#   jwt_secret = "..."   # better: MODRPC_AUTH__JWT_SECRET in the environment
"""

_PYPROJECT = """\
[project]
name = "{name}"
version = "0.1.0"
description = "Services built out of modrpc modules."
requires-python = ">=3.11"
dependencies = ["modrpc"]

[project.optional-dependencies]
test = ["modrpc[testing]"]

[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

# The project runs in place (`modrpc up`, `pytest`): nothing of it is installed as a package.
[tool.setuptools]
packages = []

[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
testpaths = ["modules"]
pythonpath = ["."]
"""

_GITIGNORE = """\
.modrpc/
.venv/
__pycache__/
"""

_README = """\
# {name}

A [modrpc](https://pypi.org/project/modrpc/) project: one folder per module under `modules/`,
their generated code under `gen/` and `proto/`.

```sh
modrpc up --reload          # gateway on 127.0.0.1:50051, one worker per module, reload on edit
grpcurl -plaintext -d '{{"name": "Ada"}}' 127.0.0.1:50051 hello.v1.HelloService/SayHello
pytest                      # each module's tests, in process (runtime.testing)
modrpc new module billing   # another module
modrpc gen                  # after changing a handler's types: record the version, regenerate
```
"""

_MODULES_INIT = '"""The modules of this project: one package per module."""\n'

_MODULE_TOML = """\
# The {name} module. See the modrpc README ("Writing a module") for every key.
[module]
name = "{name}"
version = "0.1.0"
description = "Says hello."

[capabilities]
# modules = ["other"]        # modules it may call through gctx.modules
# publish = ["{name}.said"]  # topics it may publish to

[methods.SayHello]
public = true    # callable without credentials; remove to require a token (modrpc token)
timeout = 1.0
idempotent = true
"""

_MODULE_INIT = '"""The {name} module."""\n'

_MODELS = '''\
"""The {name} module's messages: pydantic models, one request and one response per method."""

from typing import Annotated

from pydantic import BaseModel, Field


class SayHello(BaseModel):
    """Whom to greet."""

    name: Annotated[str, Field(min_length=1, max_length=100)]


class Greeting(BaseModel):
    message: str
'''

_HANDLERS = '''\
"""Handlers of the {name} module."""

from runtime import GlobalContext, LocalContext, handler

from .models import Greeting, SayHello


@handler
async def say_hello(req: SayHello, lctx: LocalContext, gctx: GlobalContext) -> Greeting:
    """Greet ``req.name``."""
    return Greeting(message=f"Hello, {{req.name}}!")
'''

_TESTS_INIT = '"""Tests of the {name} module."""\n'

_TEST = '''\
"""The {name} module's handlers, run in process through the real request lifecycle."""

from collections.abc import Callable

import pytest

from runtime.errors import InvalidArgument
from runtime.testing import ModuleHarness


@pytest.fixture
def module(module_harness: Callable[..., ModuleHarness]) -> ModuleHarness:
    return module_harness("{name}")


async def test_say_hello_greets_by_name(module: ModuleHarness) -> None:
    assert await module.call("SayHello", {{"name": "Ada"}}) == {{"message": "Hello, Ada!"}}


async def test_an_empty_name_is_refused_before_the_handler(module: ModuleHarness) -> None:
    with pytest.raises(InvalidArgument, match="name"):
        await module.call("SayHello", {{"name": ""}})
    assert module.audit[-1].outcome != "ok"
'''


def _write(path: Path, text: str, created: list[Path]) -> None:
    if path.exists():
        raise ProjectError(f"{path} already exists; nothing was written over")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    created.append(path)


def new_project(directory: Path) -> tuple[Project, list[Path]]:
    """Create a project with the ``hello`` module in ``directory`` (new, or empty).

    Returns the project and the files written. Generating the module's code is left to
    ``modrpc gen`` (``modrpc new`` runs it), since it imports the new project's modules.
    """
    root = directory.expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ProjectError(f"{root} already exists and is not an empty folder")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", root.name).strip("-.") or "modrpc-project"
    created: list[Path] = []
    _write(root / PROJECT_FILE, _CONFIG, created)
    _write(root / "pyproject.toml", _PYPROJECT.format(name=name), created)
    _write(root / ".gitignore", _GITIGNORE, created)
    _write(root / "README.md", _README.format(name=name), created)
    _write(root / "modules" / "__init__.py", _MODULES_INIT, created)
    project = Project(root)
    created += new_module(project, "hello")
    return project, created


def new_module(project: Project, name: str, modules_dir: Path | None = None) -> list[Path]:
    """Add the module ``name`` (with a ``SayHello`` method and its tests); the files written."""
    if not MODULE_NAME.fullmatch(name):
        raise ProjectError(
            f"{name!r} is not a module name: use lower_snake_case letters and digits, "
            "starting with a letter (it becomes a Python package and a gRPC package)"
        )
    folder = (modules_dir or project.modules_dir) / name
    if folder.exists():
        raise ProjectError(f"{folder} already exists")
    created: list[Path] = []
    _write(folder / "__init__.py", _MODULE_INIT.format(name=name), created)
    _write(folder / "module.toml", _MODULE_TOML.format(name=name), created)
    _write(folder / "models.py", _MODELS.format(name=name), created)
    _write(folder / "handlers.py", _HANDLERS.format(name=name), created)
    _write(folder / "tests" / "__init__.py", _TESTS_INIT.format(name=name), created)
    _write(folder / "tests" / f"test_{name}.py", _TEST.format(name=name), created)
    return created
