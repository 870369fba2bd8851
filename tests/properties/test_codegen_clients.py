"""Property 38: typed client stubs are generated, and they work over a real socket.

For each drawn method set, ``render_client`` writes ``client.py``; the test reads it as Python
(one async and one sync class, one typed method per RPC), runs it, and calls every RPC with
both classes against a grpc.aio server on 127.0.0.1:0 that echoes the request bytes back.

The client imports its version's ``<module>_pb2``. Running protoc and its mypy plugins costs
about 0.4 s per schema, too slow for a hundred examples, so here that module holds the message
classes the runtime builds from the very same descriptor (``WireVersion``); the protoc-made
modules are exercised in ``tests/unit/test_codegen_client_server.py``.
"""

from __future__ import annotations

import ast
import asyncio
import itertools
import keyword
import sys
import types
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.codegen._pycode import render_client
from runtime.gtype import GType, Method, Schema
from runtime.wire import (
    FieldLock,
    WireVersion,
    build_file,
    pascal,
    request_message,
    response_message,
    service_name,
    snake,
)
from tests.properties.test_wire_descriptor_protoc import LOWER, object_values, schemas

VERSION = "2025-01-15"
_PACKAGES = itertools.count()

# Names that are Python keywords, or that would shadow the client's own attributes.
AWKWARD = ("Import", "Return", "Pass", "Class", "Metadata", "Global")
words = st.text(LOWER, min_size=1, max_size=7)
method_names = st.one_of(
    st.lists(words, min_size=1, max_size=3).map(lambda ws: "".join(w.capitalize() for w in ws)),
    st.sampled_from(AWKWARD),
)


@st.composite
def services(draw: st.DrawFn) -> tuple[Schema, dict[str, dict[str, Any]]]:
    """A schema whose methods are a drawn set, each echoing one object type, plus a request each."""
    base = draw(schemas())
    objects = [t for t in base.types if t.kind == "object"]
    names = draw(st.lists(method_names, min_size=1, max_size=5, unique=True))
    chosen = {name: draw(st.sampled_from(objects)) for name in names}
    schema = Schema(
        base.module,
        base.types,
        tuple(Method(n, GType.ref(t.name), GType.ref(t.name)) for n, t in chosen.items()),
    )
    requests = {n: draw(object_values(schema, t)) for n, t in chosen.items()}
    return schema, requests


def _method_name(rpc: str) -> str:
    """The client method for an RPC: snake case, with a trailing underscore for a keyword."""
    name = snake(rpc)
    return f"{name}_" if keyword.iskeyword(name) else name


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, str]:
    request = next(a for a in fn.args.args if a.arg == "request")
    assert request.annotation is not None and fn.returns is not None
    return ast.unparse(request.annotation), ast.unparse(fn.returns)


def _check_shape(source: str, schema: Schema, pb: str) -> None:
    """One async and one sync class, each with exactly one typed method per RPC."""
    tree = ast.parse(source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    cls = pascal(schema.module)
    assert set(classes) == {f"{cls}Client", f"{cls}SyncClient"}
    expected = {
        _method_name(m.name): (
            f"{pb}.{request_message(m.name)}",
            f"{pb}.{response_message(m.name)}",
        )
        for m in schema.methods
    }
    for name, is_async in ((f"{cls}Client", True), (f"{cls}SyncClient", False)):
        kind = ast.AsyncFunctionDef if is_async else ast.FunctionDef
        methods = {
            f.name: f
            for f in classes[name].body
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.name != "__init__"
        }
        assert {n: _signature(f) for n, f in methods.items()} == expected
        assert all(isinstance(f, kind) for f in methods.values())


def _load_client(
    source: str, package: str, pb_name: str, wire: WireVersion, schema: Schema
) -> types.ModuleType:
    """Execute ``client.py`` with ``from <package> import <pb_name>`` resolving to ``wire``'s classes."""
    pb = types.ModuleType(f"{package}.{pb_name}")
    for m in schema.methods:
        setattr(pb, request_message(m.name), wire.request_class(m.name))
        setattr(pb, response_message(m.name), wire.response_class(m.name))
    pkg = types.ModuleType(package)
    setattr(pkg, pb_name, pb)
    sys.modules[package] = pkg
    try:
        client = types.ModuleType(f"{package}.client")
        exec(compile(source, f"{package}/client.py", "exec"), client.__dict__)
    finally:
        del sys.modules[package]
    return client


class EchoServer:
    """A grpc.aio server on 127.0.0.1:0 answering every method with the request's own bytes.

    It lives for the whole module on one event loop (started here, not at import), with one
    async and one blocking channel to it; each example only records what its calls sent.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.seen: list[tuple[str, str | None, str | None]] = []
        self.server = self.loop.run_until_complete(self._start())
        self.channel = self.loop.run_until_complete(self._open())
        self.sync_channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    async def _start(self) -> grpc.aio.Server:
        seen = self.seen

        class AnyMethod(grpc.GenericRpcHandler):  # type: ignore[type-arg]
            def service(
                self, details: grpc.HandlerCallDetails
            ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
                path = details.method

                async def echo(
                    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
                ) -> bytes:
                    metadata = dict(context.invocation_metadata() or ())
                    seen.append((path, metadata.get("x-api-version"), metadata.get("x-extra")))
                    return request

                return grpc.unary_unary_rpc_method_handler(echo)

        server = grpc.aio.server()
        server.add_generic_rpc_handlers((AnyMethod(),))
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server

    async def _open(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")

    def close(self) -> None:
        self.sync_channel.close()
        self.loop.run_until_complete(self.channel.close(None))
        self.loop.run_until_complete(self.server.stop(None))
        self.loop.close()


@pytest.fixture(scope="module")
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


async def _call_everything(
    server: EchoServer,
    schema: Schema,
    client: types.ModuleType,
    wire: WireVersion,
    requests: dict[str, dict[str, Any]],
) -> None:
    cls = pascal(schema.module)
    async_client = getattr(client, f"{cls}Client")(server.channel, metadata=(("x-extra", "a"),))
    sync_client = getattr(client, f"{cls}SyncClient")(server.sync_channel)
    for m in schema.methods:
        message = wire.from_dict(request_message(m.name), requests[m.name])
        sent = wire.to_dict(request_message(m.name), message)
        response = await getattr(async_client, _method_name(m.name))(message, timeout=5)
        assert isinstance(response, wire.response_class(m.name))
        assert wire.to_dict(response_message(m.name), response) == sent
        call = getattr(sync_client, _method_name(m.name))
        response = await asyncio.to_thread(call, message, timeout=5, metadata=(("x-extra", "s"),))
        assert isinstance(response, wire.response_class(m.name))
        assert wire.to_dict(response_message(m.name), response) == sent


@given(services())
@settings(max_examples=100, deadline=None)
def test_generated_clients_have_one_typed_method_per_rpc_and_work(
    echo_server: EchoServer, case: tuple[Schema, dict[str, dict[str, Any]]]
) -> None:
    """Property 38: Typed client stubs are generated.

    ``client.py`` has ``<Module>Client`` (async) and ``<Module>SyncClient``, each with one
    method per RPC typed ``<Method>Request`` → ``<Method>Response``, named in snake case (a
    keyword gets a trailing underscore). Both classes call every RPC over a real socket, send
    ``x-api-version`` plus the caller's metadata, and return the response message type.
    """
    schema, requests = case
    fdp = build_file(schema, FieldLock())
    package = f"modrpc_p38_{next(_PACKAGES)}"
    pb_name = f"{schema.module}_pb2"
    source = render_client(
        fdp, module=schema.module, version=VERSION, package=package, header="DO NOT EDIT: test"
    )
    assert source.startswith("# DO NOT EDIT: test\n")
    _check_shape(source, schema, pb_name)
    wire = WireVersion(schema, fdp)
    client = _load_client(source, package, pb_name, wire, schema)
    assert client.VERSION == VERSION
    echo_server.seen.clear()
    echo_server.loop.run_until_complete(
        _call_everything(echo_server, schema, client, wire, requests)
    )
    paths = [f"/{service_name(schema.module)}/{m.name}" for m in schema.methods]
    assert echo_server.seen == [(path, VERSION, extra) for path in paths for extra in ("a", "s")]
