"""One trace spans the gateway, the worker, and the worker's calls to other modules.

``orders.PlaceOrder`` through the gateway calls ``users.GetUser`` and ``inventory.Reserve``
through ``gctx``. Every span of that request — the gateway's, the orders worker's, and the users
and inventory workers' — belongs to the caller's one trace, because the trace context travels in
the metadata of every hop.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runtime.observability import HANDLER_ATTRIBUTE, REQUEST_ID_ATTRIBUTE
from tests.fixtures.gateway_modules.stack import GatewayStack

pytestmark = pytest.mark.integration


async def test_one_trace_spans_gateway_worker_and_module_calls(
    span_exporter: InMemorySpanExporter, gw_stack: GatewayStack
) -> None:
    exporter = span_exporter
    for module in ("users", "inventory", "orders"):
        await gw_stack.worker(module)
    gateway = await gw_stack.gateway(ready=["users", "inventory", "orders"])
    client = gw_stack.client(gateway)
    token = gw_stack.token("users:read", "users:write", "orders:write")  # PlaceOrder reads the user for its caller

    email = f"trace-{uuid.uuid4().hex[:8]}@example.com"
    user = await client.call(
        "users", "CreateUser", {"given_name": "Mary", "email": email}, token=token
    )
    assert user.code == grpc.StatusCode.OK and user.body is not None
    exporter.clear()
    order = await client.call(
        "orders", "PlaceOrder", {"user_id": user.body["id"], "items": [{"sku": "WIDGET-1", "quantity": 1}]},
        token=token,
    )  # fmt: skip
    assert order.code == grpc.StatusCode.OK, order.details

    wanted = {"orders.PlaceOrder", "users.GetUser", "inventory.Reserve"}
    for _ in range(100):  # server spans end just after the response is sent: wait, bounded
        spans = [
            s
            for s in exporter.get_finished_spans()
            if s.attributes and s.attributes.get(REQUEST_ID_ATTRIBUTE) == order.request_id
        ]
        handlers = {str(s.attributes.get(HANDLER_ATTRIBUTE)) for s in spans if s.attributes}
        if wanted <= handlers and len(spans) >= 6:
            break
        await asyncio.sleep(0.02)
    assert wanted <= handlers, handlers
    traces = {s.context.trace_id for s in spans if s.context is not None}
    assert len(traces) == 1, f"{len(traces)} traces for one request: {handlers}"
    servers = [s for s in spans if s.kind == trace.SpanKind.SERVER]
    assert {str(s.attributes.get(HANDLER_ATTRIBUTE)) for s in servers if s.attributes} >= wanted
