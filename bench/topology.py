"""The servers one benchmark run measures, started side by side on 127.0.0.1.

* **worker**: ``modrpc worker echo``, serving :mod:`bench.modules.echo` with its full lifecycle;
  it takes mutual TLS only, so h2load (which presents no client certificate) cannot call it
  directly any more: the ``direct`` path is reported as skipped, and nginx stands in for it;
* **gateway**: ``modrpc gateway`` in front of that worker, with the route's whole policy chain
  (JWT authentication, role, rate limit, version resolution, tracing, RED metrics), reaching the
  worker over its lane (:mod:`runtime.lane`), mutual TLS;
* **gateway_edge**: the same with TLS at the edge too (h2load over ``https``);
* **gateway_grpc**: the same gateway with ``MODRPC_LANE=false``, reaching the worker over gRPC;
* **bare**: :mod:`bench.reference` ``echo``, the cheapest grpc.aio server;
* **bare_stream**: :mod:`bench.reference` ``stream``, the cheapest grpc.aio streaming server
  (for :mod:`bench.streams`);
* **lane_proxy**: :mod:`bench.reference` ``lane-proxy``, the floor of the gateway's design: a
  grpc.aio server forwarding over the worker's lane with the gateway's certificate and no
  policy at all;
* **proxy**: :mod:`bench.reference` ``proxy``, the naive pass-through in front of the worker
  (dialling it with the gateway's certificate);
* **proxy_bare**: the same pass-through in front of the bare server, the setting in which issue 7
  quotes the naive proxy's figures (0.34x the throughput, 2.3x the CPU per call);
* **nginx**: ``grpc_pass grpcs://`` in front of the worker with the gateway's client certificate,
  when nginx is installed;
* **nginx_bare**: the same nginx in front of the bare server serving the same mutual TLS with the
  worker's certificate (``bare_tls``): what the worker costs beyond it is the worker's own, like
  for like;
* **embedded**: ``modrpc up --embedded``, the gateway serving the echo module in its own process.

What internal mutual TLS costs on the lane, against the same lane in plaintext, is measured
beside these by :mod:`bench.lane_tls`.

Each is its own process so its CPU time can be read on its own. Every target is checked with
real gRPC calls (:func:`bench.load.verify`) before any load is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import grpc_frame
from bench.modules import MODULES_DIR
from bench.processes import Server
from runtime.config import DEV_JWT_SECRET
from runtime.gateway import issue_dev_token
from runtime.identity import Peer, Principal, principal_header
from runtime.tls import CertificateAuthority, ensure_identity
from runtime.versions import VersionCatalog
from runtime.wire import method_path, request_message

__all__ = ["MODULE", "ROOT", "Call", "Target", "Topology", "echo_call", "topology"]

ROOT = Path(__file__).resolve().parent.parent
MODULE = "echo"
METHOD = "Echo"
VERSION = "2025-01-15"
WORKER_READY = "modrpc-worker-ready "
GATEWAY_READY = "ready: gateway on "


@dataclass(frozen=True)
class Call:
    """The measured call: where it goes, its bytes, and the metadata a real client sends."""

    path: str
    request: bytes
    response: bytes
    """What a successful call answers: the echo module encodes its response exactly as the request."""
    metadata: tuple[tuple[str, str], ...]
    body_file: Path
    """The request as an h2load body: the gRPC frame prefix and the request bytes."""

    @property
    def response_frame_bytes(self) -> int:
        return len(grpc_frame(self.response))


def echo_call(workdir: Path) -> Call:
    """The echo call at :data:`VERSION`, authenticated with a dev token holding ``echo:call``."""
    catalog = VersionCatalog.from_module_dir(MODULE, MODULES_DIR / MODULE, {})
    value = {"text": "modrpc benchmark: the same bytes there and back", "count": 42}
    request = catalog.wire(VERSION).encode(request_message(METHOD), value)
    token = issue_dev_token(
        DEV_JWT_SECRET, subject="bench", roles=["echo:call"], ttl_seconds=3600, issuer="modrpc-dev", audience="modrpc"
    )
    body = workdir / "echo-request.bin"
    body.write_bytes(grpc_frame(request))
    # The principal header is for the proxy and nginx paths, which reach the worker as the gateway
    # (with its certificate) and pass the caller's metadata on; a gateway never forwards it.
    principal = principal_header(Principal("bench", ("echo:call",), "jwt"))
    metadata = (
        ("authorization", f"Bearer {token}"), ("x-api-version", VERSION), ("x-modrpc-principal", principal)
    )
    return Call(method_path(MODULE, METHOD), request, request, metadata, body)


@dataclass(frozen=True)
class Target:
    """Somewhere to send the call, and the processes whose CPU it costs."""

    name: str
    address: str
    servers: Mapping[str, Server]
    """Role (``gateway``, ``worker``, ``server``...) → process, for CPU per call."""
    ca: Path | None = None
    """The CA of the target's TLS certificate when it serves TLS (h2load then uses https)."""


@dataclass
class Topology:
    """The started servers, by target name."""

    call: Call
    workdir: Path
    targets: dict[str, Target] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    """Target name → why it is not measured (e.g. nginx not installed)."""


def _settings_env(workdir: Path, store: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
        MODRPC_STORE_URL=f"sqlite:///{workdir / store}",
        MODRPC_FABRIC_URL="memory://",
        MODRPC_RATELIMIT_URL="memory://",
        MODRPC_GATEWAY_PORT="0",
        MODRPC_ADMIN_PORT="0",
        MODRPC_LOG_LEVEL="WARNING",
        MODRPC_MODULES_DIR=str(MODULES_DIR),
        MODRPC_OBSERVABILITY__AUDIT_PATH=str(workdir / f"audit-{store}.jsonl"),
        MODRPC_DATA_DIR=str(workdir / "data"),
        MODRPC_TLS__DIR=str(workdir / "tls"),
    )
    return env


def _modrpc(*args: str) -> list[str]:
    return [sys.executable, "-m", "runtime.cli", *args]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream worker {{
        server {upstream};
        keepalive 32;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        keepalive_requests 10000000;
        location / {{
            grpc_pass grpcs://worker;
            grpc_ssl_certificate {tls}/gateway.crt;
            grpc_ssl_certificate_key {tls}/gateway.key;
            grpc_ssl_trusted_certificate {tls}/ca.crt;
            grpc_ssl_verify on;
            grpc_ssl_name echo.module.modrpc;
            grpc_ssl_server_name on;
            grpc_ssl_session_reuse on;
        }}
    }}
}}
"""


async def _nginx(workdir: Path, upstream: str, tls: Path, name: str = "nginx") -> Server:
    # Debian puts nginx in /usr/sbin, which is not on every PATH.
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if binary is None:
        raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx-light)")
    directory = workdir / name
    directory.mkdir()
    port = _free_port()
    conf = directory / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(dir=directory, upstream=upstream, port=port, tls=tls))
    command = [binary, "-e", str(directory / "nginx-error.log"), "-p", str(directory), "-c", str(conf)]
    server = await Server.start_polling(name, command, address=f"127.0.0.1:{port}")
    server.pids = (server.process.pid, *_children(server.process.pid))
    return server


def _children(pid: int) -> tuple[int, ...]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return tuple(found)


@contextlib.asynccontextmanager
async def topology(*, nginx: bool = True, embedded: bool = True) -> AsyncIterator[Topology]:
    """Start every server, yield them, and stop them all whatever happened."""
    with tempfile.TemporaryDirectory(prefix="modrpc-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "data").mkdir()
        tls = workdir / "tls"
        for peer in (Peer.gateway(), Peer.module(MODULE)):  # the development CA, as modrpc up makes it
            ensure_identity(tls, peer, dev_ca=True)
        edge = CertificateAuthority.create("bench edge CA")  # the edge's own CA, as a public one would be
        edge.save(workdir / "edge")
        edge_cert, edge_key = edge.issue(Peer.gateway(), hosts=["127.0.0.1"]).save(workdir / "edge")
        top = Topology(echo_call(workdir), workdir)
        async with contextlib.AsyncExitStack() as stack:

            async def start(name: str, command: list[str], ready: str, env: dict[str, str] | None = None) -> Server:
                server = await Server.start(name, command, ready=ready, env=env, cwd=ROOT)
                stack.push_async_callback(server.stop)
                return server

            env = _settings_env(workdir, "store.db")
            worker = await start("worker", _modrpc("worker", MODULE), WORKER_READY, env)
            gateway = await start("gateway", _modrpc("gateway"), GATEWAY_READY, env)
            bare = await start("bare", [sys.executable, "-m", "bench.reference", "echo"], "listening ")
            async def in_front_of_worker(name: str, kind: str) -> Server:
                """A reference forwarder (bench.reference) reaching the worker as the gateway does."""
                command = [sys.executable, "-m", "bench.reference", kind, "--target", worker.address,
                           "--tls-dir", str(tls), "--module", MODULE]  # fmt: skip
                return await start(name, command, "listening ")

            proxy = await in_front_of_worker("proxy", "proxy")
            top.skipped["direct"] = "workers take mutual TLS only; h2load has no client certificate"
            top.targets["gateway"] = Target("gateway", gateway.address, {"gateway": gateway, "worker": worker})
            edge_env = {**env, "MODRPC_TLS__CERT": str(edge_cert), "MODRPC_TLS__KEY": str(edge_key)}
            gateway_edge = await start("gateway_edge", _modrpc("gateway"), GATEWAY_READY, edge_env)
            top.targets["gateway_edge"] = Target(
                "gateway_edge", gateway_edge.address, {"gateway": gateway_edge, "worker": worker},
                ca=workdir / "edge" / "ca.crt",
            )  # fmt: skip
            # The same gateway with the lane switched off: its calls reach the worker over gRPC.
            grpc_env = {**env, "MODRPC_LANE": "false"}
            gateway_grpc = await start("gateway_grpc", _modrpc("gateway"), GATEWAY_READY, grpc_env)
            top.targets["gateway_grpc"] = Target(
                "gateway_grpc", gateway_grpc.address, {"gateway": gateway_grpc, "worker": worker}
            )
            top.targets["bare"] = Target("bare", bare.address, {"server": bare})
            bare_stream = await start("bare_stream", [sys.executable, "-m", "bench.reference", "stream"], "listening ")
            top.targets["bare_stream"] = Target("bare_stream", bare_stream.address, {"server": bare_stream})
            top.targets["proxy"] = Target("proxy", proxy.address, {"proxy": proxy, "worker": worker})
            # The floor of the gateway's design: grpc.aio in front, the lane behind, no policy.
            lane_proxy = await in_front_of_worker("lane_proxy", "lane-proxy")
            top.targets["lane_proxy"] = Target("lane_proxy", lane_proxy.address, {"proxy": lane_proxy, "worker": worker})
            proxy_bare = await start(
                "proxy_bare", [sys.executable, "-m", "bench.reference", "proxy", "--target", bare.address], "listening "
            )
            top.targets["proxy_bare"] = Target("proxy_bare", proxy_bare.address, {"proxy": proxy_bare, "server": bare})
            if nginx:
                try:
                    server = await _nginx(workdir, worker.address, tls)
                except (OSError, RuntimeError) as exc:
                    top.skipped["nginx"] = str(exc).splitlines()[0]
                else:
                    stack.push_async_callback(server.stop)
                    top.targets["nginx"] = Target("nginx", server.address, {"nginx": server, "worker": worker})
                    # The worker's like for like: the bare server behind the same nginx, serving
                    # the same mutual TLS with the worker's certificate.
                    bare_tls = await start(
                        "bare_tls",
                        [sys.executable, "-m", "bench.reference", "echo", "--tls-dir", str(tls), "--module", MODULE],
                        "listening ",
                    )
                    server = await _nginx(workdir, bare_tls.address, tls, "nginx_bare")
                    stack.push_async_callback(server.stop)
                    top.targets["nginx_bare"] = Target(
                        "nginx_bare", server.address, {"nginx": server, "server": bare_tls}
                    )
            else:
                top.skipped["nginx"] = "not requested"
            if embedded:
                embedded_env = _settings_env(workdir, "embedded.db")
                up = await start("embedded", _modrpc("up", "--embedded"), GATEWAY_READY, embedded_env)
                top.targets["embedded"] = Target("embedded", up.address, {"gateway": up})
            yield top
        await asyncio.sleep(0)
