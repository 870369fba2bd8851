"""Property 7 over the instance picker, with random instance sets, health sets and mark orders."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.client._pool import RoundRobin

addresses = st.lists(st.from_regex(r"10\.0\.0\.[0-9]{1,3}:50[0-9]{2}", fullmatch=True), min_size=1, max_size=12, unique=True)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), instances=addresses)
def test_an_unhealthy_instance_gets_no_new_traffic_while_a_healthy_one_exists(
    data: st.DataObject, instances: list[str]
) -> None:
    """Property 7: An unhealthy instance gets no new traffic while a healthy one exists.

    Health changes at random between picks; every pick made while some instance is healthy
    lands on a healthy one, and with every instance unhealthy the picker still answers.
    """
    picker = RoundRobin(instances)
    unhealthy: set[str] = set()
    steps = data.draw(
        st.lists(st.tuples(st.sampled_from(["pick", "down", "up"]), st.sampled_from(instances)), max_size=60)
    )
    for action, address in steps:
        if action == "down":
            unhealthy.add(address)
        elif action == "up":
            unhealthy.discard(address)
        else:
            picked = picker.pick(unhealthy)
            assert picked in instances
            if len(unhealthy) < len(instances):
                assert picked not in unhealthy


@settings(max_examples=200, deadline=None)
@given(data=st.data(), instances=addresses, rounds=st.integers(min_value=1, max_value=5))
def test_healthy_instances_share_the_traffic_evenly(data: st.DataObject, instances: list[str], rounds: int) -> None:
    """Property 7: An unhealthy instance gets no new traffic while a healthy one exists.

    With health fixed, ``rounds * healthy`` picks give every healthy instance exactly
    ``rounds`` calls and every unhealthy one none.
    """
    unhealthy = set(data.draw(st.lists(st.sampled_from(instances), max_size=len(instances) - 1, unique=True)))
    healthy = [address for address in instances if address not in unhealthy]
    picker = RoundRobin(instances)
    counts = Counter(picker.pick(unhealthy) for _ in range(rounds * len(healthy)))
    assert counts == Counter({address: rounds for address in healthy})
