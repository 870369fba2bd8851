"""Property tests of LocalContext under concurrency, and of its meta (SPEC §3 "LocalContext")."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.deadline import Deadline
from runtime.identity import Principal, new_request_id
from runtime.lcc import HookSpec, LifecycleCall, LocalContext, RequestMeta, run_lifecycle


def make_meta() -> RequestMeta:
    return RequestMeta(
        request_id=new_request_id(),
        handler="shop.Order",
        method="/shop.v1.Shop/Order",
        version="2025-06-01",
    )


@settings(max_examples=100, deadline=None)
@given(
    scripts=st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["set", "delete", "clear"]),
                st.sampled_from(["a", "b", "c", "shared"]),
                st.integers(),
            ),
            max_size=10,
        ),
        min_size=2,
        max_size=6,
    )
)
def test_lctx_operations_are_isolated_per_request(
    scripts: list[list[tuple[str, str, int]]],
) -> None:
    """Property 23: lctx operations are isolated per request.

    Concurrent requests apply their own operations to the same keys, interleaved at every
    step; each ends with exactly the state its own operations produce.
    """

    async def handler(
        script: list[tuple[str, str, int]], lctx: LocalContext, gctx: Any
    ) -> dict[str, Any]:
        for op, key, value in script:
            if op == "set":
                lctx.set(key, value)
            elif op == "delete":
                lctx.delete(key)
            else:
                lctx.clear()
            await asyncio.sleep(0)
        return dict(lctx.state)

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(
                run_lifecycle(
                    LifecycleCall(handler=handler, request=s, lctx=LocalContext(make_meta()))
                )
                for s in scripts
            )
        )

    for script, final in zip(scripts, asyncio.run(main()), strict=True):
        expected: dict[str, int] = {}
        for op, key, value in script:
            if op == "set":
                expected[key] = value
            elif op == "delete":
                expected.pop(key, None)
            else:
                expected.clear()
        assert final == expected


@settings(max_examples=100, deadline=None)
@given(
    plans=st.lists(
        st.tuples(
            st.sets(st.sampled_from(["created", "paid", "shipped"])),
            st.lists(st.sampled_from(["created", "paid", "shipped"]), max_size=6),
        ),
        min_size=2,
        max_size=6,
    )
)
def test_a_request_scoped_event_reaches_only_its_own_request(
    plans: list[tuple[set[str], list[str]]],
) -> None:
    """Property 26: A request-scoped event reaches only its own request.

    Concurrent requests subscribe to overlapping event names and publish interleaved; each
    listener receives exactly its own request's payloads for its event, in order.
    """

    async def handler(
        plan: tuple[set[str], list[str]], lctx: LocalContext, gctx: Any
    ) -> dict[str, list[Any]]:
        subscribed, published = plan
        received: dict[str, list[Any]] = {name: [] for name in subscribed}
        for name in sorted(subscribed):
            lctx.subscribe(name, received[name].append)
        await asyncio.sleep(0)
        for index, name in enumerate(published):
            delivered = await lctx.publish(name, (lctx.meta.request_id, index))
            assert delivered == (1 if name in subscribed else 0)
            await asyncio.sleep(0)
        return received

    async def main() -> list[tuple[str, dict[str, list[Any]]]]:
        contexts = [LocalContext(make_meta()) for _ in plans]
        results = await asyncio.gather(
            *(
                run_lifecycle(LifecycleCall(handler=handler, request=plan, lctx=lctx))
                for plan, lctx in zip(plans, contexts, strict=True)
            )
        )
        return [(lctx.meta.request_id, r) for lctx, r in zip(contexts, results, strict=True)]

    for (subscribed, published), (request_id, received) in zip(
        plans, asyncio.run(main()), strict=True
    ):
        for name in subscribed:
            assert received[name] == [
                (request_id, index) for index, sent in enumerate(published) if sent == name
            ]


metas = st.builds(
    RequestMeta,
    request_id=st.from_regex(r"\A[A-Za-z0-9._:-]{1,128}\Z"),
    handler=st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\.[A-Z][A-Za-z0-9]{0,10}\Z"),
    method=st.from_regex(r"\A/[a-z][a-z0-9]{0,6}\.v[0-9]\.[A-Z][a-z]{0,6}/[A-Z][A-Za-z]{0,8}\Z"),
    version=st.one_of(
        st.dates().map(str), st.from_regex(r"\Atsv:[0-9]{10}-[a-z]{1,8}-[0-9]{1,3}\Z")
    ),
    flags=st.frozensets(st.sampled_from(["snapshot", "debug", "trace"])),
    deadline=st.one_of(
        st.none(),
        st.integers(min_value=1000, max_value=60_000).map(lambda ms: Deadline.after(ms / 1000)),
    ),
    principal=st.builds(
        Principal,
        subject=st.text(min_size=1, max_size=12),
        roles=st.lists(st.sampled_from(["admin", "buyer", "ops"]), unique=True).map(tuple),
        method=st.sampled_from(["jwt", "api_key", "anonymous", "internal"]),
    ),
)


@settings(max_examples=100, deadline=None)
@given(meta=metas)
def test_lctx_meta_is_complete(meta: RequestMeta) -> None:
    """Property 27: ``lctx.meta`` is complete.

    Hooks and the handler see the request id, handler id, method, resolved version, flags,
    deadline and principal exactly as the worker built them, and the JSON form has all seven.
    """
    seen: list[RequestMeta] = []

    async def handler(req: Any, lctx: LocalContext, gctx: Any) -> None:
        seen.append(lctx.meta)

    hooks = [HookSpec("b", "before", "global", lambda lctx, req: seen.append(lctx.meta))]
    asyncio.run(
        run_lifecycle(
            LifecycleCall(handler=handler, request={}, lctx=LocalContext(meta), hooks=hooks)
        )
    )
    assert seen == [meta, meta]
    data = meta.to_json()
    assert set(data) == {
        "request_id",
        "handler",
        "method",
        "version",
        "flags",
        "deadline_ms",
        "principal",
    }
    assert all(data[key] for key in ("request_id", "handler", "method", "version", "principal"))
    assert (data["deadline_ms"] is None) == (meta.deadline is None)
    back = RequestMeta.from_json(data)
    assert (back.request_id, back.handler, back.method, back.version, back.flags, back.principal) == (
        meta.request_id, meta.handler, meta.method, meta.version, meta.flags, meta.principal,
    )  # fmt: skip
