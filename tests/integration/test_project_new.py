"""modrpc in a project of its own, as a new user meets it, outside this repository.

The environment is built the way a user installs modrpc, but fast: this repository is built
into a wheel once per session and installed (not editable, so only what the wheel holds is
there: ``runtime``, no ``modules`` or ``gen``) into a fresh virtual environment. Its
dependencies are not downloaded again: a ``.pth`` file puts this repository's ``.venv``
site-packages after the fresh environment's own, so ``grpcio``, ``pytest`` and the rest come
from there, while ``runtime`` comes from the wheel (a ``.pth`` path line runs no ``.pth`` file
of its own, so the repository's editable install is not seen).

Then, in a temporary folder: ``modrpc new demo``, ``modrpc gen --check``, ``pytest``,
``modrpc up --reload`` with grpcurl calls, ``modrpc new module greetings`` picked up by the
reload; and a module folder elsewhere served with ``--modules DIR`` runs its own code while
``modrpc gen`` there leaves the project's other generated files as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.projects import Up as ProjectUp
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = Path(sys.executable).parent / "grpcurl"


@pytest.fixture(scope="session")
def user_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with this repository installed from its wheel; its bin/."""
    base = tmp_path_factory.mktemp("user-env")
    wheels = base / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "modrpc-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = wheels.glob("modrpc-*.whl")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv / "bin"


def user_environ(bin_dir: Path) -> dict[str, str]:
    """A user's shell: the fresh environment first on PATH, no settings or test variables."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("MODRPC_", "PYTEST_", "PYTHON")) and k != "VIRTUAL_ENV"
    }  # fmt: skip
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", MODRPC_ADMIN_PORT="0", PYTHONUNBUFFERED="1")
    return env


def sh(bin_dir: Path, cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=cwd, env=user_environ(bin_dir), capture_output=True, text=True, timeout=timeout, check=False
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


class Up(ProjectUp):
    def __init__(self, bin_dir: Path, cwd: Path, *args: str) -> None:
        super().__init__([str(bin_dir / "modrpc"), "up", *args], cwd, user_environ(bin_dir))


@pytest.fixture
def running() -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.stop()


def grpcurl(address: str, method: str, body: dict[str, str]) -> dict[str, str]:
    done = subprocess.run(
        [str(GRPCURL), "-plaintext", "-max-time", "10", "-d", json.dumps(body), address, method],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    reply: dict[str, str] = json.loads(done.stdout)
    return reply


def test_a_new_project_generates_tests_serves_and_reloads_a_new_module(
    user_env: Path, tmp_path: Path, running: list[Up]
) -> None:
    examples = sh(user_env, tmp_path, str(user_env / "python"), "-c", "import modules")
    assert examples.returncode != 0, "the installed distribution holds the runtime only"
    ok(sh(user_env, tmp_path, "modrpc", "new", "demo"))
    demo = tmp_path / "demo"
    assert "generated code is up to date" in ok(sh(user_env, demo, "modrpc", "gen", "--check"))
    tests = ok(sh(user_env, demo, str(user_env / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"))
    assert "2 passed" in tests

    port = free_port()
    up = Up(user_env, demo, "--port", str(port), "--reload")
    running.append(up)
    up.line_with("ready", within=60)
    address = f"127.0.0.1:{port}"
    assert grpcurl(address, "hello.v1.HelloService/SayHello", {"name": "Ada"}) == {"message": "Hello, Ada!"}

    ok(sh(user_env, demo, "modrpc", "new", "module", "greetings"))
    ok(sh(user_env, demo, "modrpc", "gen"))
    up.line_with("greetings started", within=60)
    reply = grpcurl(address, "greetings.v1.GreetingsService/SayHello", {"name": "Bo"})
    assert reply == {"message": "Hello, Bo!"}
    assert up.stop() == 0


def test_a_module_folder_elsewhere_runs_its_own_code_and_gen_there_touches_no_other_module(
    user_env: Path, tmp_path: Path, running: list[Up]
) -> None:
    ok(sh(user_env, tmp_path, "modrpc", "new", "demo"))
    demo = tmp_path / "demo"
    # Another folder with a module of the same name, whose code answers differently.
    elsewhere = tmp_path / "elsewhere" / "modules"
    shutil.copytree(demo / "modules" / "hello", elsewhere / "hello", ignore=shutil.ignore_patterns("__pycache__"))
    handlers = elsewhere / "hello" / "handlers.py"
    handlers.write_text(handlers.read_text().replace('f"Hello, {req.name}!"', 'f"Hello from elsewhere, {req.name}!"'))

    port = free_port()
    up = Up(user_env, demo, "--port", str(port), "--modules", str(elsewhere))
    running.append(up)
    up.line_with("ready", within=60)
    reply = grpcurl(f"127.0.0.1:{port}", "hello.v1.HelloService/SayHello", {"name": "Ada"})
    assert reply == {"message": "Hello from elsewhere, Ada!"}
    assert up.stop() == 0

    # A second folder of modules: gen there writes its modules' code and nothing else.
    before = {p: p.read_bytes() for tree in ("gen", "proto", "modules/hello") for p in (demo / tree).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    extra = tmp_path / "extra"
    ok(sh(user_env, demo, "modrpc", "new", "module", "greeter", "--modules", str(extra)))
    ok(sh(user_env, demo, "modrpc", "gen", "--modules", str(extra)))
    assert "up to date" in ok(sh(user_env, demo, "modrpc", "gen", "--check", "--modules", str(extra)))
    after = {p: p.read_bytes() for p in before if p.exists()}
    assert after == before, "modrpc gen --modules DIR changed or deleted another module's files"
    assert (demo / "gen" / "greeter").is_dir() and (demo / "proto" / "greeter").is_dir()
    assert "up to date" in ok(sh(user_env, demo, "modrpc", "gen", "--check"))
