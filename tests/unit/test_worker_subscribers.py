"""A subscriber's publishes go with its success, as a handler's do with its call."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import TypeAdapter

from runtime.context import GlobalContext, ModuleRegistry
from runtime.fabric import Message
from runtime.fabric._memory import MemoryFabric
from runtime.manifest import CapabilitySet
from runtime.worker._service import _deliver


async def test_a_subscriber_that_fails_publishes_nothing_and_one_that_succeeds_publishes() -> None:
    caps = CapabilitySet(module="relay", publish=("relay.out",), subscribe=("relay.in",))

    async def no_calls(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no module calls here")

    async with MemoryFabric() as fabric:
        gctx = GlobalContext(module="relay", capabilities=caps, modules=ModuleRegistry(caps, {}, no_calls), fabric=fabric)
        out: list[Message] = []

        async def keep(message: Message) -> None:
            out.append(message)

        await fabric.subscribe("relay.out", keep, group="test")

        async def forward(event: dict[str, int], gctx: GlobalContext) -> None:
            await gctx.publish("relay.out", {"n": event["n"]})
            if event["n"] == 2:
                raise RuntimeError("failed after publishing")

        deliver = _deliver(forward, TypeAdapter(dict[str, int]), gctx)
        await deliver(SimpleNamespace(data=b'{"n": 1}', request_id="r-1"))
        with pytest.raises(RuntimeError):
            await deliver(SimpleNamespace(data=b'{"n": 2}', request_id="r-2"))
        await asyncio.sleep(0.2)
        assert [m.data for m in out] == [b'{"n":1}'], "the failed delivery's publish was dropped"
        assert out[0].request_id == "r-1"
