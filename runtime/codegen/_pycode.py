"""Python code for one module version: protoc's output made importable, plus typed clients.

protoc writes ``users/v1/users_pb2.py`` importing ``users.v1``; we place the files under
``gen/users/v2025_01_15/`` and rewrite those imports so the output imports as a package with no
``sys.path`` edits. Each version registers its descriptors in a private pool, because every
version of a module declares the same protobuf names with different shapes and the default pool
would refuse the second one.
"""

from __future__ import annotations

import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

from runtime.gtype import VALIDATE_PROTO, VALIDATE_PROTO_ROOT, validate_descriptor
from runtime.wire import pascal, service_name, snake

__all__ = ["compile_buf_validate", "compile_python", "render_client", "render_version_init"]


def _protoc_include() -> str:
    import grpc_tools

    return os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")


def _mypy_plugins(folder: Path) -> list[str]:
    """protoc's ``--plugin`` options for mypy-protobuf, run by this very interpreter.

    Not found on ``PATH``: the ``protoc-gen-mypy`` scripts exist only where the package's
    scripts were installed and put on ``PATH``, and the interpreter running gen is the one
    whose mypy-protobuf is known to be there.
    """
    options = []
    for name, entry in (("protoc-gen-mypy", "main"), ("protoc-gen-mypy_grpc", "grpc")):
        script = folder / name
        script.write_text(
            f"#!{sys.executable}\nimport sys\nfrom mypy_protobuf.main import {entry}\nsys.exit({entry}())\n",
            encoding="utf-8",
        )
        script.chmod(0o700)
        options.append(f"--plugin={name}={script}")
    return options


def compile_python(
    fdp: descriptor_pb2.FileDescriptorProto, proto_text: str, *, package: str, header: str
) -> dict[str, str]:
    """Run protoc (python, grpc and mypy plugins) on ``proto_text``; file name → contents."""
    with tempfile.TemporaryDirectory(prefix="modrpc-protoc-") as tmp:
        src, out = Path(tmp, "src"), Path(tmp, "out")
        plugins = _mypy_plugins(Path(tmp))
        proto_path = src / fdp.name
        proto_path.parent.mkdir(parents=True)
        proto_path.write_text(proto_text, encoding="utf-8")
        out.mkdir()
        cmd = [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{src}", f"-I{VALIDATE_PROTO_ROOT}", f"-I{_protoc_include()}",
            f"--python_out={out}", f"--grpc_python_out={out}",
            f"--mypy_out={out}", f"--mypy_grpc_out={out}", *plugins,
            fdp.name,
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"protoc failed on {fdp.name}:\n{done.stderr.strip()}")
        produced = out / Path(fdp.name).parent
        files = {p.name: p.read_text(encoding="utf-8") for p in sorted(produced.iterdir()) if p.is_file()}
        shutil.rmtree(out)
    proto_pkg = fdp.package  # users.v1
    module_stem = Path(fdp.name).stem  # users
    root = package.split(".")[0]  # gen
    result: dict[str, str] = {}
    for name, text in files.items():
        text = text.replace(f"from {proto_pkg} import", f"from {package} import")
        text = text.replace(f"'{proto_pkg}.{module_stem}_pb2'", f"'{package}.{module_stem}_pb2'")
        # buf.validate's generated module lives in the generated package too: gen.buf.validate.
        text = text.replace("from buf.validate import", f"from {root}.buf.validate import")
        text = text.replace("'buf.validate.validate_pb2'", f"'{root}.buf.validate.validate_pb2'")
        if name.endswith("_pb2.py"):
            text = _private_pool(text, fdp)
        result[name] = f"# {header}\n{text}"
    return result


def compile_buf_validate(*, root: str, header: str) -> dict[str, str]:
    """``gen/buf/validate/``: protoc's Python for the vendored ``validate.proto``, so generated
    messages that carry ``buf.validate`` rules import their definitions from the same package."""
    return compile_python(validate_descriptor(), (VALIDATE_PROTO_ROOT / VALIDATE_PROTO).read_text("utf-8"),
                          package=f"{root}.buf.validate", header=header)  # fmt: skip


def _dependency_closure(fdp: descriptor_pb2.FileDescriptorProto) -> list[str]:
    """Every file ``fdp`` imports, directly or not, each after the files it imports itself."""
    imports = {VALIDATE_PROTO: list(validate_descriptor().dependency)}
    ordered: list[str] = []

    def visit(name: str) -> None:
        for dep in imports.get(name, ()):
            visit(dep)
        if name not in ordered:
            ordered.append(name)

    for dep in fdp.dependency:
        visit(dep)
    return ordered


def _private_pool(text: str, fdp: descriptor_pb2.FileDescriptorProto) -> str:
    """Register this version's descriptors in a pool of its own instead of the default pool."""
    lines = ["_POOL = _descriptor_pool.DescriptorPool()"]
    for dep in _dependency_closure(fdp):
        directory, stem = str(Path(dep).parent), Path(dep).stem
        alias = f"{directory.replace('/', '_dot_')}_dot_{stem.replace('_', '__')}__pb2"
        if dep not in fdp.dependency:  # imported only through another file: import it here
            lines.append(f"from {directory.replace('/', '.')} import {stem}_pb2 as {alias}")
        lines.append(f"_POOL.AddSerializedFile({alias}.DESCRIPTOR.serialized_pb)")
    lines.append("DESCRIPTOR = _POOL.AddSerializedFile(")
    replaced, count = re.subn(
        r"DESCRIPTOR = _descriptor_pool\.Default\(\)\.AddSerializedFile\(", "\n".join(lines), text
    )
    if count != 1:
        raise RuntimeError("unexpected protoc output: cannot find the descriptor registration")
    return replaced


def render_version_init(*, module: str, version: str, header: str) -> str:
    return (
        f"# {header}\n"
        f'"""{module} at API version {version}: messages, gRPC stubs, typed clients."""\n\n'
        f'VERSION = "{version}"\n'
        f'SERVICE = "{service_name(module)}"\n'
    )


def _method_attr(method: str) -> str:
    """The client method for an RPC: ``CreateUser`` → ``create_user``; ``Import`` → ``import_``.

    A keyword gets PEP 8's trailing underscore, since ``def import(...)`` is not Python.
    """
    name = snake(method)
    return f"{name}_" if keyword.iskeyword(name) else name


def _callable_attr(method: str) -> str:
    """The attribute holding an RPC's multi-callable, kept clear of the client's ``_metadata``."""
    name = f"_{snake(method)}"
    return f"{name}_rpc" if name == "_metadata" else name


def render_client(
    fdp: descriptor_pb2.FileDescriptorProto, *, module: str, version: str, package: str, header: str
) -> str:
    """Typed async and sync clients whose calls carry ``x-api-version`` for this version.

    A streaming method keeps its shape: a server-streaming one returns the call, iterated for
    its responses (``async for`` on the async client, ``for`` on the sync one); a client-streaming
    one takes an iterable of requests (async or not, on the async client) and returns the
    response; a bidirectional one takes the requests and returns the call to iterate.
    """
    stem = Path(fdp.name).stem
    pb = f"{stem}_pb2"
    cls = pascal(module)
    methods = list(fdp.service[0].method) if fdp.service else []
    prefix = f".{fdp.package}."
    streams = any(m.client_streaming or m.server_streaming for m in methods)
    out: list[str] = [
        f"# {header}",
        f'"""Typed clients for {service_name(module)} at API version {version}.',
        "",
        "Every call sends ``x-api-version: " + version + "``, so the gateway serves this exact shape",
        "whatever the module's newest version is.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from collections.abc import AsyncIterator, Iterable, Iterator, Sequence" if streams else "from collections.abc import Sequence",
        "from typing import cast",
        "",
        "import grpc",
        "import grpc.aio",
        "",
        f"from {package} import {pb}",
        "",
        f'VERSION = "{version}"',
        "Metadata = Sequence[tuple[str, str]]",
        "",
    ]
    for kind, channel_type, is_async in (
        ("", "grpc.aio.Channel", True),
        ("Sync", "grpc.Channel", False),
    ):
        out += [
            "",
            f"class {cls}{kind}Client:",
            f'    """{"Async" if is_async else "Blocking"} client for {service_name(module)} at {version}."""',
            "",
            f"    def __init__(self, channel: {channel_type}, *, metadata: Metadata = ()) -> None:",
            '        self._metadata: tuple[tuple[str, str], ...] = (("x-api-version", VERSION), *metadata)',
        ]
        for m in methods:
            req, resp = m.input_type[len(prefix) :], m.output_type[len(prefix) :]
            kind = f"{'stream' if m.client_streaming else 'unary'}_{'stream' if m.server_streaming else 'unary'}"
            out += [
                f"        self.{_callable_attr(m.name)} = channel.{kind}(",
                f'            "/{service_name(module)}/{m.name}",',
                f"            request_serializer={pb}.{req}.SerializeToString,",
                f"            response_deserializer={pb}.{resp}.FromString,",
                "        )",
            ]
        for m in methods:
            out += _client_method(m, pb, prefix, is_async=is_async)
    return "\n".join(out) + "\n"


def _client_method(
    m: descriptor_pb2.MethodDescriptorProto, pb: str, prefix: str, *, is_async: bool
) -> list[str]:
    """One typed method of a generated client, in the shape of its RPC."""
    req, resp = f"{pb}.{m.input_type[len(prefix) :]}", f"{pb}.{m.output_type[len(prefix) :]}"
    call = f"self.{_callable_attr(m.name)}"
    keywords = "timeout=timeout, metadata=(*self._metadata, *metadata)"
    tail = "*, timeout: float | None = None, metadata: Metadata = ()"
    if m.client_streaming:
        # grpc takes iterators; a list (or any iterable) is made one here.
        requests = f"AsyncIterator[{req}] | Iterable[{req}]" if is_async else f"Iterable[{req}]"
        head = f"self, requests: {requests}, {tail}"
        argument = "requests if isinstance(requests, AsyncIterator) else iter(requests)" if is_async else "iter(requests)"
    else:
        head = f"self, request: {req}, {tail}"
        argument = "request"
    name = _method_attr(m.name)
    if m.server_streaming:
        kind = "StreamStream" if m.client_streaming else "UnaryStream"
        returns = f"grpc.aio.{kind}Call[{req}, {resp}]" if is_async else f"Iterator[{resp}]"
        shape = "bidirectional" if m.client_streaming else "server-streaming"
        iterate = "async for" if is_async else "for"
        return [
            "",
            f"    def {name}(",
            f"        {head}",
            f"    ) -> {returns}:",
            f'        """Call {m.name} ({shape}): iterate the result ({iterate}) for the responses."""',
            f"        call = {call}({argument}, {keywords})",
            f"        return cast({returns}, call)",
        ]
    doc = f"Call {m.name} (client-streaming): send the requests, get one response." if m.client_streaming else f"Call {m.name}."
    return [
        "",
        f"    {'async ' if is_async else ''}def {name}(",
        f"        {head}",
        f"    ) -> {resp}:",
        f'        """{doc}"""',
        f"        response = {'await ' if is_async else ''}{call}(",
        f"            {argument}, {keywords}",
        "        )",
        f"        return cast({resp}, response)",
    ]
