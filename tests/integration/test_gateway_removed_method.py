"""A method removed by a newer version, end to end (SPEC §4, the caller's contract).

The ``shelf`` fixture module had ``Shelve`` and ``Count`` at 2025-01-15; 2025-06-01 removed
``Count`` (see ``tests/fixtures/gateway_modules``). A caller pinned to 2025-01-15 is either
served ``Count`` by a worker that still serves 2025-01-15, side by side, or hears UNIMPLEMENTED
naming 2025-06-01; never INTERNAL, never grpc's bare "Method not found!". The same answer comes
from the gateway (a real ``modrpc gateway`` process, called by the real grpcurl, and one in this
process) and straight from a 2025-06-01 worker over gRPC and over its lane.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest

from runtime.config import Settings
from runtime.deadline import Deadline
from runtime.gateway import Gateway
from runtime.identity import Peer
from runtime.lane import LaneClient
from runtime.status import error_of
from runtime.tls import InternalTls
from runtime.transport import CallError
from runtime.wire import method_path, request_message
from tests.conftest import Dial
from tests.fixtures.gateway_modules.commands import (
    free_port,
    grpcurl,
    isolated_env,
    start,
    stop,
    token,
)
from tests.fixtures.gateway_modules.stack import GatewayStack, StartWorker

UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED
REMOVED = "shelf.Count was removed in version 2025-06-01"
NOT_IN_LATEST = (
    "shelf.Count is not part of version 2025-06-01 of shelf: it was removed in version "
    "2025-06-01 (the last version with it is 2025-01-15)"
)
COUNT = method_path("shelf", "Count")


async def test_a_pinned_caller_of_a_removed_method_hears_which_version_removed_it(
    gw_stack: GatewayStack, gw_modules: dict[str, Path]
) -> None:
    """2025-06-01 serves 2025-01-15 callers through its transformer step: ``Shelve`` is served,
    ``Count`` is UNIMPLEMENTED naming 2025-06-01, at the old version and at the newest alike."""
    await gw_stack.worker("shelf", tree=gw_modules["main"])
    gateway = await gw_stack.gateway(ready=["shelf"])
    client = gw_stack.client(gateway)
    key = gw_stack.token()

    shelved = await client.call("shelf", "Shelve", {"title": "Dune"}, version="2025-01-15")
    assert shelved.ok and shelved.body == {"title": "Dune", "served_at": "2025-06-01"}

    old = await client.call("shelf", "Count", {"prefix": "D"}, version="2025-01-15", token=key)
    assert old.code == UNIMPLEMENTED, old.details
    assert REMOVED in old.details and old.request_id
    raw = await client.call_raw(COUNT, b"", metadata=[("authorization", f"Bearer {key}")])
    assert raw.code == UNIMPLEMENTED and NOT_IN_LATEST in raw.details


async def test_a_worker_still_serving_the_old_version_serves_the_removed_method(
    gw_stack: GatewayStack, gw_modules: dict[str, Path]
) -> None:
    """Side by side: a 2025-01-15 worker takes the 2025-01-15 callers, ``Count`` included, under
    the policy 2025-01-15 declared for it (its role), and the 2025-06-01 worker everyone else.

    The newer worker starts last, so it is the last to publish the module's versions: the
    manifest of 2025-01-15, which only a worker of that version knows, must survive it.
    """
    await gw_stack.worker("shelf", tree=gw_modules["side_v1"])
    await gw_stack.worker("shelf", tree=gw_modules["main"])
    gateway = await gw_stack.gateway(ready=["shelf"])
    client = gw_stack.client(gateway)
    await _until_served(gateway, "shelf", {"2025-01-15", "2025-06-01"})
    key = gw_stack.token()

    denied = await client.call("shelf", "Count", {"prefix": "Du"}, version="2025-01-15", token=key)
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED and "shelf:count" in denied.details
    counter = gw_stack.token("shelf:count")
    counted = await client.call("shelf", "Count", {"prefix": "Du"}, version="2025-01-15", token=counter)
    assert counted.ok, counted.details
    assert counted.body == {"count": 2, "served_at": "2025-01-15"}
    old = await client.call("shelf", "Shelve", {"title": "Emma"}, version="2025-01-15")
    assert old.ok and old.body is not None and old.body["served_at"] == "2025-01-15"
    new = await client.call("shelf", "Shelve", {"title": "Emma"})
    assert new.ok and new.body is not None and new.body["served_at"] == "2025-06-01"
    latest = await client.call_raw(COUNT, b"", metadata=[("authorization", f"Bearer {counter}")])
    assert latest.code == UNIMPLEMENTED and NOT_IN_LATEST in latest.details


async def test_with_no_transformer_and_no_old_worker_the_removed_method_is_unimplemented(
    gw_stack: GatewayStack, gw_modules: dict[str, Path], tmp_path: Path
) -> None:
    """A breaking 2025-06-01 without transformers serves no 2025-01-15 caller: while no worker
    serves 2025-01-15, its other methods are UNAVAILABLE (a worker may come back), but ``Count``
    is refused for good, naming the version that removed it."""
    tree = tmp_path / "modules"
    shutil.copytree(gw_modules["main"] / "shelf", tree / "shelf")
    shutil.rmtree(tree / "shelf" / "transformers")
    await gw_stack.worker("shelf", tree=tree)
    gateway = await gw_stack.gateway(ready=["shelf"])
    client = gw_stack.client(gateway)

    count = await client.call("shelf", "Count", {}, version="2025-01-15", token=gw_stack.token())
    assert count.code == UNIMPLEMENTED and REMOVED in count.details
    shelve = await client.call("shelf", "Shelve", {"title": "Dune"}, version="2025-01-15")
    assert shelve.code == grpc.StatusCode.UNAVAILABLE, shelve.details


async def test_a_worker_names_the_version_that_removed_a_method_over_grpc_and_its_lane(
    start_worker: StartWorker,
    worker_settings: Callable[..., Settings],
    gw_modules: dict[str, Path],
    dial: Dial,
    tls_dir: Path,
) -> None:
    """Straight to a 2025-06-01 worker, with no gateway in between (mutual TLS with the
    gateway's certificate, as the gateway reaches it): the same answers as the gateway's, over
    gRPC and over the lane, and a version no one knows is still NOT_FOUND."""
    worker = await start_worker("shelf", settings=worker_settings(modules_dir=gw_modules["main"]))
    assert worker.lane_address and worker.service is not None
    wire = worker.service.catalog.wire("2025-01-15")
    payload = wire.encode(request_message("Count"), {"prefix": "D"})
    cases = [
        ([("x-api-version", "2025-01-15")], UNIMPLEMENTED, REMOVED),
        ([], UNIMPLEMENTED, NOT_IN_LATEST),
        ([("x-api-version", "2020-01-01")], grpc.StatusCode.NOT_FOUND, "2020-01-01"),
    ]
    async with dial(worker) as channel:
        call = channel.unary_unary(COUNT, request_serializer=None, response_deserializer=None)
        for metadata, code, text in cases:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(payload, metadata=(*metadata, ("x-request-id", "direct-1")), timeout=5)
            assert caught.value.code() == code and text in (caught.value.details() or "")
            assert ("x-request-id", "direct-1") in tuple(caught.value.trailing_metadata() or ())
    gateway = InternalTls.load(tls_dir, Peer.gateway(), dev_ca=True)
    async with LaneClient(worker.lane_address, tls=gateway, server=Peer.module("shelf")) as lane:
        for metadata, code, text in cases:
            with pytest.raises(CallError) as refused:
                await lane.unary(COUNT, payload, metadata, Deadline.after(5))
            error = error_of(refused.value.status)
            assert refused.value.status.code == code and text in error.message


async def test_a_removed_method_tells_nothing_to_a_caller_the_worker_would_not_serve(
    start_worker: StartWorker, worker_settings: Callable[..., Settings], gw_modules: dict[str, Path]
) -> None:
    """Admission comes first, as for a served method: with no proven peer (here an in-process
    call that presents no identity) the answer is UNAUTHENTICATED, not which version removed it."""
    worker = await start_worker("shelf", settings=worker_settings(modules_dir=gw_modules["main"]))
    assert worker.service is not None
    wire = worker.service.catalog.wire("2025-01-15")
    payload = wire.encode(request_message("Count"), {"prefix": "D"})
    with pytest.raises(CallError) as refused:
        await worker.service.transport.unary(COUNT, payload, [("x-api-version", "2025-01-15")], Deadline.after(5))
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "2025-06-01" not in refused.value.details


async def test_grpcurl_through_a_gateway_process_hears_which_version_removed_count(
    gw_stack: GatewayStack, gw_modules: dict[str, Path], gw_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """The real ``modrpc gateway`` as a child process and the real grpcurl, by reflection
    alone: at 2025-01-15 ``describe`` still shows ``Count`` (that version's contract), and
    calling it is UNIMPLEMENTED naming 2025-06-01, with the gateway's log free of errors."""
    assert gw_settings().store_url == isolated_env(tmp_path)["MODRPC_STORE_URL"]
    await gw_stack.worker("shelf", tree=gw_modules["main"])
    port = free_port()
    command = await start(tmp_path, "gateway", "--port", str(port))
    try:
        await command.line_with("gateway listening on", within=30)
        address = f"127.0.0.1:{port}"
        old = ("-H", "x-api-version: 2025-01-15")
        code, out, err = await grpcurl(*old, address, "describe", "shelf.v1.ShelfService")
        assert code == 0, err
        assert "rpc Count ( .shelf.v1.CountRequest )" in out
        auth = ("-H", f"authorization: Bearer {token()}")
        body = json.dumps({"prefix": "D"})
        code, out, err = await grpcurl(*old, *auth, "-d", body, address, "shelf.v1.ShelfService/Count")
        assert code != 0
        assert "Code: Unimplemented" in err and REMOVED in err, err
        # At the newest version, reflection itself no longer lists it: grpcurl refuses locally.
        code, out, err = await grpcurl(*auth, "-d", "{}", address, "shelf.v1.ShelfService/Count")
        assert code != 0 and 'does not include a method named "Count"' in err, err
    finally:
        assert await stop(command) == 0
    log = command.log.read_text()
    assert "Traceback" not in log and "INTERNAL" not in log, log[-3000:]


async def _until_served(gateway: Gateway, module: str, versions: set[str]) -> None:
    """Wait until the gateway's table routes ``module`` to every one of ``versions``."""
    give_up = time.monotonic() + 10
    while time.monotonic() < give_up:
        routes = gateway.table.modules.get(module)
        if routes is not None and versions <= set(routes.served):
            return
        await gateway.refresh()
        await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway never served {module} at {sorted(versions)}")
