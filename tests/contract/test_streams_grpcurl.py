"""The real ``grpcurl`` on the example modules' streaming methods, through ``modrpc up`` as a
user runs it (a child process on a free port, its state in the test's tmp folder).

WatchNotifications is the README's example: a watcher started with grpcurl prints a
notification within a second of a users.CreateUser made by another grpcurl. Every streaming
method is described and called by reflection alone, through the gateway and against a worker,
and health and reflection keep answering. A worker takes mutual TLS only: grpcurl reaches one
as the README shows, with the development CA's ``client-developer`` certificate, which this
``up`` grants ``inventory:write`` (``tls.client_roles``) and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.gateway_modules.commands import (
    GRPCURL,
    Command,
    developer_tls,
    free_port,
    grpcurl,
    start,
    stop,
    token,
)

pytestmark = pytest.mark.contract

STREAMING = {
    "notifications.v1.NotificationsService.WatchNotifications": "returns ( stream .notifications.v1.WatchNotificationsResponse )",
    "inventory.v1.InventoryService.RestockBatch": "( stream .inventory.v1.RestockBatchRequest )",
    "inventory.v1.InventoryService.CheckStock": "( stream .inventory.v1.CheckStockRequest ) returns ( stream .inventory.v1.CheckStockResponse )",
}


@dataclass
class Up:
    """A running ``modrpc up``: the gateway's address and each worker's, by module."""

    addresses: dict[str, str]
    tls: Path
    """Its TLS folder: the development CA and the identities it issued."""

    def __getitem__(self, name: str) -> str:
        return self.addresses[name]

    def tls_for(self, name: str) -> tuple[str, ...]:
        """grpcurl's TLS flags for ``name``: none for the gateway (its edge is plaintext here),
        the developer's certificate for a worker."""
        return () if name == "gateway" else developer_tls(self.tls)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """``modrpc up`` on a free port, its developer certificate granted ``inventory:write``."""
    tmp = tmp_path_factory.mktemp("streams-grpcurl")
    loop = asyncio.new_event_loop()
    port = free_port()
    roles = {"MODRPC_TLS__CLIENT_ROLES": json.dumps({"developer": ["inventory:write"]})}
    command: Command = loop.run_until_complete(start(tmp, "up", "--port", str(port), env=roles))
    try:
        loop.run_until_complete(command.line_with("ready", within=90))
        addresses = {"gateway": f"127.0.0.1:{port}"}
        for line in command.lines[:-1]:
            parts = line.split()
            if len(parts) == 2 and ":" in parts[1]:
                addresses[parts[0]] = parts[1]
        yield Up(addresses, tmp / "tls")
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(stop(command))
        loop.close()


def auth(*roles: str) -> list[str]:
    return ["-H", f"authorization: Bearer {token(*roles)}"]


async def test_grpcurl_describes_every_streaming_method_through_the_gateway_and_a_worker(up: Up) -> None:
    assert GRPCURL.exists()
    for symbol, shape in STREAMING.items():
        module = symbol.split(".")[0]
        for name in ("gateway", module):
            code, out, err = await grpcurl(up[name], "describe", symbol, tls=up.tls_for(name))
            assert code == 0, err
            assert shape in out, out


async def test_a_watcher_prints_a_notification_within_a_second_of_create_user(up: Up) -> None:
    """The README's flow: ``grpcurl -d '{}' … WatchNotifications`` prints each new notification."""
    email = f"watch-{uuid.uuid4().hex[:10]}@example.com"
    watcher = await asyncio.create_subprocess_exec(
        str(GRPCURL), "-plaintext", "-max-time", "20", *auth("notifications:read"), "-d", "{}",
        up["gateway"], "notifications.v1.NotificationsService/WatchNotifications",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.sleep(1.5)  # grpcurl connects, reflects and opens the watch
        assert watcher.returncode is None, await watcher.stderr.read() if watcher.stderr else b""
        created_at = time.monotonic()
        body = json.dumps({"given_name": "Watched", "family_name": "User", "email": email})
        code, out, err = await grpcurl(
            *auth("users:write"), "-d", body, up["gateway"], "users.v1.UsersService/CreateUser"
        )
        assert code == 0, err
        user = json.loads(out)
        assert watcher.stdout is not None
        text = ""
        while email not in text:  # grpcurl prints each message as a JSON object
            chunk = await asyncio.wait_for(watcher.stdout.read(4096), 5)
            assert chunk, "the watch ended before the notification came"
            text += chunk.decode()
        waited = time.monotonic() - created_at
        assert waited < 1.0 + 0.5, f"the notification took {waited:.2f}s"  # grpcurl's own call included
        assert user["id"] in text and "Welcome, Watched!" in text
    finally:
        if watcher.returncode is None:
            watcher.terminate()
        await watcher.wait()


async def test_restock_batch_and_check_stock_through_grpcurl_against_the_gateway_and_the_worker(up: Up) -> None:
    """Through the gateway with a token; against the worker with the developer's certificate,
    the credential the worker checks ``inventory:write`` on (it reads no token)."""
    sku = f"GRPCURL-{uuid.uuid4().hex[:6].upper()}"
    lines = "\n".join(json.dumps({"sku": sku, "quantity": q}) for q in (2, 3, 5))
    for name, credentials in (("gateway", auth("inventory:write")), ("inventory", [])):
        code, out, err = await grpcurl(
            *credentials, "-d", lines, up[name], "inventory.v1.InventoryService/RestockBatch", tls=up.tls_for(name)
        )
        assert code == 0, err
        summary = json.loads(out)
        assert (int(summary["lines"]), int(summary["units"])) == (3, 10)  # int64: JSON strings
    asked = "\n".join(json.dumps({"sku": s}) for s in (sku, "WIDGET-1"))
    for name in ("gateway", "inventory"):
        code, out, err = await grpcurl("-d", asked, up[name], "inventory.v1.InventoryService/CheckStock", tls=up.tls_for(name))
        assert code == 0, err
        answers = [json.loads(part) for part in out.replace("}\n{", "}\x00{").split("\x00")]
        assert [a["sku"] for a in answers] == [sku, "WIDGET-1"]
        assert int(answers[0]["available"]) == 20  # 10 added through each address


async def test_a_bad_line_mid_batch_is_invalid_argument_with_the_field_named(up: Up) -> None:
    lines = "\n".join(json.dumps(line) for line in ({"sku": "WIDGET-1", "quantity": 1}, {"sku": "WIDGET-1", "quantity": 0}))
    code, _, err = await grpcurl(
        *auth("inventory:write"), "-d", lines, up["gateway"], "inventory.v1.InventoryService/RestockBatch"
    )
    assert code != 0
    assert "InvalidArgument" in err and "quantity" in err


async def test_a_worker_checks_the_developers_roles_when_a_stream_opens(up: Up) -> None:
    """The developer holds ``inventory:write`` only: a watch straight to the notifications
    worker is refused as it opens, whatever principal header grpcurl sends, and so is a batch
    from a certificate the deployment's CA never issued (no connection at all)."""
    forged = ["-H", "x-modrpc-principal: root;notifications:read,admin;jwt"]
    code, _, err = await grpcurl(
        *forged, "-d", "{}", up["notifications"], "notifications.v1.NotificationsService/WatchNotifications",
        tls=up.tls_for("notifications"),
    )  # fmt: skip
    assert code != 0 and "Code: PermissionDenied" in err and "missing role 'notifications:read'" in err, err
    no_certificate = ("-cacert", str(up.tls / "ca.crt"))
    code, _, err = await grpcurl(
        "-d", "{}", up["inventory"], "inventory.v1.InventoryService/RestockBatch", tls=no_certificate
    )
    assert code != 0 and "Failed to dial" in err, err


async def test_health_and_reflection_keep_answering(up: Up) -> None:
    for name in ("gateway", "notifications"):
        code, out, err = await grpcurl(up[name], "grpc.health.v1.Health/Check", tls=up.tls_for(name))
        assert code == 0 and "SERVING" in out, err
        code, out, err = await grpcurl(up[name], "list", tls=up.tls_for(name))
        assert code == 0 and "grpc.reflection.v1alpha.ServerReflection" in out, err
