"""A stream's rate limits at the gateway, over real sockets: ``rate_limit`` counts each stream
once, as it opens, and ``message_rate_limit`` counts each request message, across the caller's
streams; both refuse with RESOURCE_EXHAUSTED and ``google.rpc.RetryInfo``.

The examples' ``inventory.RestockBatch`` (client streaming) is served from a copy of the module
whose ``module.toml`` has small limits, so a test reaches them in a few calls. The same copy
shows a bad line refused mid-batch reaching the caller with its own status, over the lane and
over gRPC.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from runtime.gateway import Gateway
from runtime.wire import method_path, request_message, response_message
from tests.fixtures.gateway_modules.stack import GatewayStack

EXAMPLES = Path(__file__).resolve().parents[2] / "modules"
RESTOCK = method_path("inventory", "RestockBatch")


def limited_inventory(folder: Path, *, streams: str, messages: str) -> Path:
    """A modules folder holding a copy of the examples' inventory with these RestockBatch limits."""
    # A folder name of its own: a module's package is bound to one folder per process, and the
    # examples' ``modules`` is already imported.
    tree = folder / f"limited_{uuid.uuid4().hex[:8]}"
    shutil.copytree(EXAMPLES / "inventory", tree / "inventory", ignore=shutil.ignore_patterns("tests", "__pycache__"))
    toml = tree / "inventory" / "module.toml"
    text = toml.read_text()
    for old, new in (
        ('rate_limit = "10/second"', f'rate_limit = "{streams}"'),
        ('message_rate_limit = "5000/second"', f'message_rate_limit = "{messages}"'),
    ):
        assert old in text, f"the example's module.toml no longer says {old}"
        text = text.replace(old, new, 1)
    toml.write_text(text)
    return tree


class Restocker:
    """Opens RestockBatch streams through one gateway as one caller."""

    def __init__(self, channel: grpc.aio.Channel, gateway: Gateway, token: str) -> None:
        catalog = gateway.table.modules["inventory"].catalog
        self._wire = catalog.wire(catalog.latest.id)
        self._call = channel.stream_unary(RESTOCK)
        self._metadata = (("authorization", f"Bearer {token}"),)

    bad_line_at: int | None = None
    """A line of each batch whose quantity is 0 (the rule says at least 1)."""

    def lines(self, count: int) -> Iterator[bytes]:
        for n in range(count):
            line = {"sku": f"RL-{uuid.uuid4().hex[:8].upper()}", "quantity": 0 if n == self.bad_line_at else 1}
            yield self._wire.encode(request_message("RestockBatch"), line)

    async def batch(self, count: int) -> tuple[grpc.StatusCode, str, dict[str, object] | None, float | None]:
        """Send ``count`` lines in one batch: the status, its details, the answer, and the
        RetryInfo delay (seconds) of a refusal."""
        try:
            answer = await self._call(self.lines(count), metadata=self._metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
            delay = None
            for detail in status.details if status is not None else ():
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    delay = info.retry_delay.ToTimedelta().total_seconds()
            return error.code(), error.details() or "", None, delay
        return grpc.StatusCode.OK, "", self._wire.decode(response_message("RestockBatch"), answer), None


async def test_a_stream_counts_once_as_it_opens_and_each_message_counts_across_streams(
    gw_stack: GatewayStack, tmp_path: Path
) -> None:
    tree = limited_inventory(tmp_path, streams="3/minute", messages="8/minute")
    await gw_stack.worker("inventory", tree=tree)
    gateway = await gw_stack.gateway(ready=["inventory"])
    restocker = Restocker(gw_stack.client(gateway).channel, gateway, gw_stack.token("inventory:write"))

    for lines in (4, 3):  # two streams, seven messages: within both limits
        code, details, answer, _ = await restocker.batch(lines)
        assert code == grpc.StatusCode.OK, details
        assert answer is not None and answer["lines"] == lines
    # The third stream may open, but only one more message is left in the minute.
    code, details, _, delay = await restocker.batch(2)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert "rate limit 8/minute exceeded" in details
    assert delay is not None and 0 < delay <= 60
    # A fourth stream is refused as it opens, whatever it would send.
    code, details, _, delay = await restocker.batch(1)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert "rate limit 3/minute exceeded" in details
    assert delay is not None and 0 < delay <= 60


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "grpc"])
async def test_a_bad_line_among_many_is_invalid_argument_naming_the_field(
    gw_stack: GatewayStack, tmp_path: Path, lane: bool
) -> None:
    """The worker refuses a batch at its bad line while the gateway is still forwarding the
    lines after it: the caller hears the worker's INVALID_ARGUMENT, not a failed write. (Over
    gRPC, grpc.aio's own write would replace it with INTERNAL: grpc/grpc#36066.)"""
    tree = limited_inventory(tmp_path, streams="100/minute", messages="10000/minute")
    await gw_stack.worker("inventory", tree=tree)
    gateway = await gw_stack.gateway(ready=["inventory"], lane=lane)
    restocker = Restocker(gw_stack.client(gateway).channel, gateway, gw_stack.token("inventory:write"))
    restocker.bad_line_at = 3
    for _ in range(5):
        code, details, _, _ = await restocker.batch(400)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert "quantity" in details
