"""The generated output against the real tools: mypy --strict, buf lint, and ``modrpc gen --check``.

These run the same commands ``make lint`` and ``make test`` run, on the committed tree and on
a tree freshly generated in a temporary folder (whose methods include awkward names).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.codegen import ModuleSource, generate
from runtime.gtype import Field, GType, Method, Schema

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
S = GType.primitive

FRESH = Schema(
    "demo",
    (
        GType.object(
            "Note",
            [
                Field("text", S("str")),
                Field("count", S("int"), required=False),
                Field("at", S("datetime"), required=False),
                Field("tags", GType.map(S("str"), S("float")), required=False),
                Field("color", GType.ref("Color"), required=False),
                Field("value", GType.union(S("int"), S("str")), required=False),
            ],
        ),
        GType.enum("Color", ["red", "green"]),
    ),
    tuple(
        Method(name, GType.ref("Note"), GType.ref("Note")) for name in ("Put", "Import", "Metadata")
    ),
)


@pytest.fixture(scope="module")
def fresh_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fresh")
    directory = root / "modules" / "demo"
    directory.mkdir(parents=True)
    generate(
        root, [ModuleSource("demo", directory, FRESH)], date="2025-01-15", now=lambda: 1736899200.0
    )
    return root


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private mypy cache, seeded from the repo's when there is one (only a speed-up)."""
    cache = tmp_path_factory.mktemp("mypy") / "cache"
    if (REPO / ".mypy_cache").is_dir():
        shutil.copytree(REPO / ".mypy_cache", cache)
    return cache


def _mypy(cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    # --follow-imports=silent: the property is about gen/; runtime/ (which the generated
    # validators import) is type-checked by `make lint` on its own.
    return subprocess.run(
        [
            str(BIN / "mypy"),
            "--strict",
            "--follow-imports=silent",
            "--config-file",
            str(REPO / "pyproject.toml"),
            "--cache-dir",
            str(cache),
            "gen",
        ],
        cwd=cwd,
        env={**os.environ, "MYPYPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_committed_gen_passes_mypy_strict(mypy_cache: Path) -> None:
    """Property 5: Generated stubs pass ``mypy --strict`` (the committed gen/)."""
    done = _mypy(REPO, mypy_cache)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


def test_freshly_generated_gen_passes_mypy_strict(fresh_root: Path, mypy_cache: Path) -> None:
    """Property 5: Generated stubs pass ``mypy --strict`` (a tree generated just now)."""
    done = _mypy(fresh_root, mypy_cache)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


def _version_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "proto").glob("*/*") if p.is_dir())


def test_buf_lint_passes_on_every_committed_version_folder() -> None:
    folders = _version_dirs(REPO)
    assert {p.parent.name for p in folders} >= {"users", "orders", "inventory", "notifications"}
    for folder in folders:
        done = subprocess.run(
            [str(BIN / "buf"), "lint", str(folder), "--config", str(REPO / "proto" / "buf.yaml")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{folder}: {done.stdout}{done.stderr}"


def test_buf_lint_passes_on_a_freshly_generated_tree(fresh_root: Path) -> None:
    (folder,) = _version_dirs(fresh_root)
    done = subprocess.run(
        [str(BIN / "buf"), "lint", str(folder), "--config", str(fresh_root / "proto" / "buf.yaml")],
        cwd=fresh_root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_gen_check_passes_on_the_repository() -> None:
    done = subprocess.run(
        [str(BIN / "modrpc"), "gen", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "up to date" in done.stdout


_CLIENT_SCRIPT = """
import asyncio, grpc, grpc.aio
from gen.demo.v2025_01_15 import client, demo_pb2, demo_pb2_grpc

seen = []

class Echo(demo_pb2_grpc.DemoServiceServicer):
    async def _echo(self, request, response_type, context):
        seen.append(dict(context.invocation_metadata())["x-api-version"])
        return response_type.FromString(request.SerializeToString())

    async def Put(self, request, context):
        return await self._echo(request, demo_pb2.PutResponse, context)

    async def Import(self, request, context):
        return await self._echo(request, demo_pb2.ImportResponse, context)

    async def Metadata(self, request, context):
        return await self._echo(request, demo_pb2.MetadataResponse, context)

async def main():
    server = grpc.aio.server()
    demo_pb2_grpc.add_DemoServiceServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            c = client.DemoClient(channel)
            for call, req in ((c.put, demo_pb2.PutRequest), (c.import_, demo_pb2.ImportRequest),
                              (c.metadata, demo_pb2.MetadataRequest)):
                reply = await call(req(text="hi", count=3, color=demo_pb2.COLOR_GREEN), timeout=5)
                print(type(reply).__name__, reply.text, reply.count, reply.color)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            s = client.DemoSyncClient(channel)
            reply = await asyncio.to_thread(s.import_, demo_pb2.ImportRequest(value_str="v"), timeout=5)
            print(type(reply).__name__, reply.WhichOneof("value"), reply.value_str)
    finally:
        await server.stop(None)
    print("versions", sorted(set(seen)), len(seen))

asyncio.run(main())
"""


def test_fresh_generated_package_imports_without_path_edits_and_its_clients_work(
    fresh_root: Path,
) -> None:
    """Property 38 on protoc's own output: the package imports from the project root as is,
    and its async and sync clients (``import_`` and ``metadata`` included) call a server built
    on the generated servicer."""
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT_SCRIPT],
        cwd=fresh_root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "PutResponse hi 3 2",
        "ImportResponse hi 3 2",
        "MetadataResponse hi 3 2",
        "ImportResponse value_str v",
        "versions ['2025-01-15'] 4",
    ]
