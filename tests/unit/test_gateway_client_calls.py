"""The gateway's per-client budget of running calls (``limits.max_calls_per_client``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from runtime.errors import ResourceExhausted
from runtime.gateway._ingress import ClientCalls, GatewayCall
from runtime.identity import ANONYMOUS, Principal


class _Context:
    """What the step needs of grpc's context: the peer, and a callback when the call ends."""

    def __init__(self, peer: str) -> None:
        self._peer = peer
        self.ended: list[Callable[[Any], None]] = []

    def peer(self) -> str:
        return self._peer

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self.ended.append(callback)

    def end(self) -> None:
        for callback in self.ended:
            callback(self)


def _call(principal: Principal = ANONYMOUS, peer: str = "ipv4:10.0.0.1:5000") -> GatewayCall:
    return GatewayCall(b"", {}, cast(Any, _Context(peer)), cast(Any, None), principal=principal)


def test_anonymous_callers_count_by_address_and_principals_by_who_they_are() -> None:
    calls = ClientCalls(2)
    ada = Principal(subject="ada", method="jwt")
    for call in (_call(), _call(peer="ipv4:10.0.0.1:6000"), _call(ada), _call(ada)):
        calls(call)
    assert calls.running("address 10.0.0.1") == 2, "two connections from one address are one client"
    assert calls.running("jwt ada") == 2
    with pytest.raises(ResourceExhausted, match=r"address 10\.0\.0\.1 already has 2 calls.*limits\.max_calls_per_client"):
        calls(_call(peer="ipv4:10.0.0.1:7000"))
    with pytest.raises(ResourceExhausted, match="jwt ada already has 2"):
        calls(_call(ada))
    calls(_call(peer="ipv6:[2001:db8::1]:443"))  # another address has its own budget
    calls(_call(Principal(subject="ada", method="api_key")))  # and so has another credential


def test_a_call_frees_its_slot_when_grpc_ends_it() -> None:
    """Not when the handler returns: grpc may hold the call (an answer the caller never lets in)
    long after."""
    calls = ClientCalls(1)
    call = _call()
    calls(call)
    with pytest.raises(ResourceExhausted):
        calls(_call())
    cast(_Context, call.context).end()
    assert calls.running("address 10.0.0.1") == 0
    calls(_call())
    assert calls.running("address 10.0.0.1") == 1


def test_callers_without_credentials_share_one_budget_however_many_addresses() -> None:
    """``limits.max_anonymous_calls``: many anonymous addresses together cannot take the slots
    callers with credentials need; each call's end gives its slot back."""
    calls = ClientCalls(2, anonymous_limit=3)
    first = [_call(peer=f"ipv4:10.0.0.{n}:5000") for n in (1, 2, 3)]
    for call in first:
        calls(call)
    with pytest.raises(ResourceExhausted, match=r"without credentials already have 3 calls.*limits\.max_anonymous_calls"):
        calls(_call(peer="ipv4:10.0.0.4:5000"))
    ada = Principal(subject="ada", method="jwt")
    calls(_call(ada))
    calls(_call(ada))  # callers with credentials are not counted against it
    with pytest.raises(ResourceExhausted, match="without credentials"):
        calls(_call(peer="ipv4:10.0.0.1:6000"))  # within its address's budget, past theirs together
    cast(_Context, first[0].context).end()
    assert calls.running_anonymous() == 2
    calls(_call(peer="ipv4:10.0.0.4:5000"))
    assert calls.running_anonymous() == 3 and calls.running("address 10.0.0.4") == 1
