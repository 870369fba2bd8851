"""The development loop in a project made by ``modrpc new``: what a module author sees.

- a handler that prints a lot never freezes its worker, and its output is in the log under
  the module's name;
- a busy port is one line naming the address and the setting that moves it;
- an unknown ``MODRPC_*`` variable is named with the closest setting;
- a module removed while ``modrpc up --reload`` runs leaves ``grpcurl list``, and
  ``modrpc versions M --retire`` retires its versions (``modrpc versions M`` still lists them);
- a breaking change under ``--reload`` names its unfilled transformer stub (so do later runs of
  ``modrpc gen``) and the worker keeps serving, until the stub is filled in.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.projects import Up as ProjectUp
from tests.services import free_port

GRPCURL = Path(sys.executable).parent / "grpcurl"


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("MODRPC_")}
    out.update({"MODRPC_ADMIN_PORT": "0", "MODRPC_DRAIN_SECONDS": "1", "PYTHONUNBUFFERED": "1", **extra})
    return out


def modrpc(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args], cwd=cwd, env=env(cwd, **extra),
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    done = modrpc(tmp_path, "new", "demo")
    assert done.returncode == 0, done.stderr
    return tmp_path / "demo"


class Up(ProjectUp):
    def __init__(self, cwd: Path, *args: str) -> None:
        super().__init__([sys.executable, "-m", "runtime.cli", "up", *args], cwd, env(cwd))

    def records(self) -> list[dict[str, object]]:
        """The JSON log records written so far (the log is JSON: it is not a terminal)."""
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]


@pytest.fixture
def ups() -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.stop()


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRPCURL), "-plaintext", "-max-time", "10", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_a_handler_printing_100_kb_per_call_keeps_serving_and_its_output_is_logged(
    project: Path, ups: list[Up]
) -> None:
    handlers = project / "modules" / "hello" / "handlers.py"
    handlers.write_text(
        handlers.read_text()
        .replace('"""Greet ``req.name``."""', '"""Greet ``req.name``."""\n    print("x" * 100_000)\n    print("said hello to", req.name, file=sys.stderr)')
        .replace("from runtime import", "import sys\n\nfrom runtime import")
    )
    port = free_port()
    up = Up(project, "--port", str(port))
    ups.append(up)
    up.line_with("ready", within=60)
    for n in range(30):  # 3 MB of output: a pipe nobody reads would have blocked the first call
        done = grpcurl("-d", json.dumps({"name": f"Ada{n}"}), f"127.0.0.1:{port}", "hello.v1.HelloService/SayHello")
        assert done.returncode == 0, f"call {n}: {done.stderr}"
    assert up.stop() == 0
    records = up.records()
    said = [r for r in records if r.get("message") == "said hello to Ada29"]
    assert said and said[0]["modrpc_module"] == "hello" and said[0]["level"] == "WARNING"
    printed = [r for r in records if r.get("modrpc_module") == "hello" and str(r.get("message", "")).startswith("xxxx")]
    assert sum(len(str(r["message"])) for r in printed) == 30 * 100_000
    served = [r for r in records if "serving hello" in str(r.get("message")) and r.get("modrpc_module") == "hello"]
    assert served, "the worker's own log records are relayed with the module's name"


@pytest.mark.parametrize(
    ("args", "extra", "setting"),
    [
        (("up", "--port", "{port}"), {}, "it is the gateway port: move it with --port N"),
        (("up", "--port", "0"), {"MODRPC_ADMIN_PORT": "{port}"}, "it is admin_port"),
        (("worker", "hello", "--port", "{port}"), {}, "it is the worker port"),
    ],
)
def test_a_busy_port_is_one_line_naming_the_address_and_the_setting(
    project: Path, args: tuple[str, ...], extra: dict[str, str], setting: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = modrpc(project, *(a.format(port=port) for a in args), **{k: v.format(port=port) for k, v in extra.items()})
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert f"127.0.0.1:{port} is already in use; {setting}" in line
    assert "Traceback" not in done.stderr


def test_an_unknown_modrpc_variable_is_named_with_the_closest_setting(project: Path) -> None:
    done = modrpc(project, "config", MODRPC_GATEWAY__ADMIN_PORT="9999", MODRPC_STORE_URL="sqlite:///x.db")
    assert done.returncode == 0, done.stderr
    assert (
        "MODRPC_GATEWAY__ADMIN_PORT is not a setting and is ignored; did you mean MODRPC_ADMIN_PORT?"
        in done.stderr
    )
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[2:]}
    assert rows["store_url"] == ["sqlite:///x.db", "MODRPC_STORE_URL"]
    assert rows["admin_port"] == ["0", "MODRPC_ADMIN_PORT"]
    assert rows["host"] == ["127.0.0.1", "default"]
    (project / "modrpc.toml").write_text("gateway_port = 50999\n")
    done = modrpc(project, "config")
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[2:]}
    assert rows["gateway_port"] == ["50999", "modrpc.toml"]


def test_a_module_removed_while_up_reloads_leaves_the_gateway_and_can_be_retired(
    project: Path, ups: list[Up]
) -> None:
    assert modrpc(project, "new", "module", "greetings").returncode == 0
    port = free_port()
    up = Up(project, "--port", str(port), "--reload")
    ups.append(up)
    up.line_with("ready", within=60)
    listed = grpcurl(f"127.0.0.1:{port}", "list")
    assert "greetings.v1.GreetingsService" in listed.stdout.split()

    shutil.rmtree(project / "modules" / "greetings")
    up.line_with("greetings removed", within=60)
    give_up = time.monotonic() + 10
    while "greetings.v1.GreetingsService" in grpcurl(f"127.0.0.1:{port}", "list").stdout.split():
        assert time.monotonic() < give_up, "the removed module is still listed"
        time.sleep(0.2)
    assert "hello.v1.HelloService" in grpcurl(f"127.0.0.1:{port}", "list").stdout.split()
    assert up.stop() == 0

    done = modrpc(project, "versions", "greetings", "--retire")
    assert done.returncode == 0, done.stderr
    assert "retired" in done.stdout and "removed from the project" in done.stdout
    listed = modrpc(project, "versions", "greetings")  # no folder: its versions in the store
    assert listed.returncode == 0, listed.stderr
    assert "no " in listed.stdout and "manifest store" in listed.stdout
    assert "retired" in listed.stdout.splitlines()[-1]


def test_a_gen_error_on_reload_keeps_the_old_code_serving_and_a_fix_restarts_only_its_module(
    project: Path, ups: list[Up]
) -> None:
    assert modrpc(project, "new", "module", "greetings").returncode == 0
    port = free_port()
    up = Up(project, "--port", str(port), "--reload")
    ups.append(up)
    up.line_with("ready", within=60)

    def say_hello() -> str:
        done = grpcurl("-d", json.dumps({"name": "Ada"}), f"127.0.0.1:{port}", "hello.v1.HelloService/SayHello")
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["message"])

    assert say_hello() == "Hello, Ada!"
    handlers = project / "modules" / "hello" / "handlers.py"
    good = handlers.read_text()
    handlers.write_text(good + "\n\ndef half_written(:\n")  # gen cannot import it
    failed = up.line_with("reload of hello failed", within=60)
    assert "SyntaxError" in failed or "invalid syntax" in failed or "handlers.py" in failed, failed
    assert say_hello() == "Hello, Ada!", "the worker keeps serving the code it had"

    handlers.write_text(good.replace('f"Hello, {req.name}!"', 'f"Howdy, {req.name}!"'))
    reloaded = up.line_with("reloaded:", within=60)
    assert "hello restarted" in reloaded and "greetings" not in reloaded, reloaded
    give_up = time.monotonic() + 10
    while (said := say_hello()) != "Howdy, Ada!":
        assert time.monotonic() < give_up, f"still {said!r}"
        time.sleep(0.2)
    assert up.stop() == 0


def test_a_breaking_change_on_reload_names_its_unfilled_stub_until_it_is_filled(
    project: Path, ups: list[Up]
) -> None:
    port = free_port()
    up = Up(project, "--port", str(port), "--reload")
    ups.append(up)
    up.line_with("ready", within=60)

    def say_hello(field: str) -> str:
        version = ["-H", "x-api-version: latest"] if field == "who" else []  # `stable` stays put
        done = grpcurl(*version, "-d", json.dumps({field: "Ada"}), f"127.0.0.1:{port}", "hello.v1.HelloService/SayHello")
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["message"])

    assert say_hello("name") == "Hello, Ada!"
    hello = project / "modules" / "hello"
    handlers, models = hello / "handlers.py", hello / "models.py"
    handlers.write_text(handlers.read_text().replace("req.name", "req.who"))
    models.write_text(models.read_text().replace("    name: Annotated", "    who: Annotated"))
    up.line_with("Unfilled transformer stubs", within=60)
    stub_line = up.line_with("forward_say_hello_request is still the generated stub", within=10)
    assert "modules/hello/transformers/" in stub_line
    assert say_hello("name") == "Hello, Ada!", "the worker keeps serving the code it had"
    regenerated = modrpc(project, "gen")
    assert regenerated.returncode == 0, regenerated.stderr
    assert "unfilled: modules/hello/transformers/" in regenerated.stdout

    (stub,) = (hello / "transformers").glob("v*.py")
    body = stub.read_text()
    start = body.index("    raise NotImplementedError(")
    stub.write_text(body[:start] + '    return {"who": request.get("name", "")}\n')
    reloaded = up.line_with("reloaded:", within=60)
    assert "hello restarted" in reloaded, reloaded
    give_up = time.monotonic() + 10
    while (said := say_hello("who")) != "Hello, Ada!":
        assert time.monotonic() < give_up, f"still {said!r}"
        time.sleep(0.2)
    assert say_hello("name") == "Hello, Ada!", "a caller at the old version goes through the transformer"
    assert up.stop() == 0
