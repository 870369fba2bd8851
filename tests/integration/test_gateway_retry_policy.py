"""The gateway applies each method's own ``retry`` policy from ``module.toml``.

``flaky`` declares three policies (tests/fixtures/gateway_modules/retrying/flaky/module.toml):

* ``Patient``: idempotent, 4 attempts, backoff windows 0.1 s, 0.3 s (0.1 x 3), 0.3 s (capped);
* ``Brief``: idempotent, 2 attempts;
* ``Unsafe``: 5 attempts declared, but not idempotent, so an UNAVAILABLE it answered is final.

Each handler answers UNAVAILABLE a given number of times and notes when every attempt reached
it, so the test sees how many attempts the gateway made and how far apart (full jitter: each
wait lies anywhere in its window, so only the upper bound is checked).
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import grpc
import pytest

from tests.fixtures.gateway_modules.retrying.flaky.handlers import ATTEMPTS
from tests.fixtures.gateway_modules.stack import GatewayClient, GatewayStack

SLACK = 0.25
"""Seconds a wait may exceed its window on a loaded machine (a wakeup, a hop, a log line)."""


@pytest.fixture
async def flaky(gw_stack: GatewayStack, gw_modules: dict[str, Path]) -> GatewayClient:
    await gw_stack.worker("flaky", tree=gw_modules["retrying"])
    gateway = await gw_stack.gateway(ready=["flaky"])
    return gw_stack.client(gateway)


def gaps(key: str) -> list[float]:
    times = ATTEMPTS[key]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_an_idempotent_method_is_tried_as_often_as_its_policy_says_with_its_backoff(
    flaky: GatewayClient,
) -> None:
    key = uuid.uuid4().hex
    reply = await flaky.call("flaky", "Patient", {"key": key, "fail_times": 3})
    assert reply.ok, reply.details
    assert reply.body == {"key": key, "attempts": 4}
    assert len(ATTEMPTS[key]) == 4
    for gap, window in zip(gaps(key), (0.1, 0.3, 0.3), strict=True):
        assert gap <= window + SLACK, (gaps(key), window)


async def test_past_its_attempts_the_last_unavailable_reaches_the_caller(flaky: GatewayClient) -> None:
    key = uuid.uuid4().hex
    reply = await flaky.call("flaky", "Patient", {"key": key, "fail_times": 10})
    assert reply.code == grpc.StatusCode.UNAVAILABLE
    assert "attempt 4 of" in reply.details
    assert len(ATTEMPTS[key]) == 4


async def test_a_policy_of_two_attempts_makes_two(flaky: GatewayClient) -> None:
    key = uuid.uuid4().hex
    reply = await flaky.call("flaky", "Brief", {"key": key, "fail_times": 5})
    assert reply.code == grpc.StatusCode.UNAVAILABLE
    assert len(ATTEMPTS[key]) == 2
    key = uuid.uuid4().hex
    assert (await flaky.call("flaky", "Brief", {"key": key, "fail_times": 1})).ok
    assert len(ATTEMPTS[key]) == 2


async def test_a_method_that_is_not_idempotent_is_never_tried_twice(flaky: GatewayClient) -> None:
    key = uuid.uuid4().hex
    reply = await flaky.call("flaky", "Unsafe", {"key": key, "fail_times": 1})
    assert reply.code == grpc.StatusCode.UNAVAILABLE
    assert len(ATTEMPTS[key]) == 1
