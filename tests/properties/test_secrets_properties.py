"""Property 29 (secrets cached within the TTL, refreshed after it) and Property 41 (secrets
reached only through the manager's capability check, and never leaked)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import PermissionDenied
from runtime.observability import configure_logging
from runtime.secrets import Secret, SecretsManager
from runtime.secrets._providers import EnvProvider
from runtime.secrets._secret import MASK


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# Each step: advance the clock by dt, maybe change the provider's value, then read.
steps = st.lists(
    st.tuples(st.floats(0, 20, allow_nan=False), st.booleans()),
    min_size=1,
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(ttl=st.floats(0.5, 10, allow_nan=False), steps=steps)
def test_secret_is_served_from_cache_within_ttl_and_refreshed_after(
    ttl: float, steps: list[tuple[float, bool]]
) -> None:
    """Property 29: Secrets are cached within the TTL and refreshed after it.

    A real env provider over a mapping the test changes; a fake clock, no sleeping. A read
    returns the cached value while less than ``ttl`` has passed since the last fetch, and the
    provider's current value (fetching again) once ``ttl`` has passed.
    """
    environ = {"MODRPC_SECRET_TOKEN": "v0"}
    clock = FakeClock()
    manager = SecretsManager([EnvProvider(environ=environ)], ttl=ttl, clock=clock)

    async def run() -> None:
        assert (await manager.get("token")).reveal() == "v0"
        fetched_at, served = clock.now, "v0"
        for index, (dt, change) in enumerate(steps, start=1):
            clock.now += dt
            if change:
                environ["MODRPC_SECRET_TOKEN"] = f"v{index}"
            value = (await manager.get("token")).reveal()
            if clock.now - fetched_at < ttl:
                assert value == served, "within the TTL the cached value is served"
            else:
                assert value == environ["MODRPC_SECRET_TOKEN"], "after the TTL it is fetched"
                fetched_at, served = clock.now, value

    asyncio.run(run())


# Secret values: printable, not blank, not made only of the mask character.
secret_values = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="*"),
    min_size=1,
    max_size=16,
)

json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10))


def embed(values: list[str]) -> st.SearchStrategy[Any]:
    """JSON-like data with the secret values (and Secret objects) hidden at random places."""
    texts = st.builds(
        lambda prefix, value, suffix: prefix + value + suffix,
        st.text(max_size=5),
        st.sampled_from(values),
        st.text(max_size=5),
    )
    secrets = st.sampled_from(values).map(lambda v: Secret("s", v))
    leaves = st.one_of(json_leaves, texts, secrets)
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.one_of(st.text(max_size=5), texts), children, max_size=4),
        ),
        max_leaves=20,
    )


def strings_in(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in strings_in(k) + strings_in(v)]
    if isinstance(obj, (list, tuple)):
        return [s for item in obj for s in strings_in(item)]
    assert not isinstance(obj, Secret), "a Secret survived redaction"
    return []


def _only(declared: set[str]) -> Callable[[str], None]:
    def allowed(name: str) -> None:
        if name not in declared:
            raise PermissionDenied(f"secret {name!r} was not declared")

    return allowed


@pytest.fixture(scope="module")
def json_log() -> Any:
    """The process's JSON log handler writing into a buffer the test reads."""
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    yield out
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "stream", None) is out:
            root.removeHandler(handler)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(secret_values, min_size=1, max_size=4, unique=True),
    declared=st.sets(st.integers(0, 3)),
    data=st.data(),
)
def test_secrets_are_reached_only_when_declared_and_never_leak(
    json_log: io.StringIO, values: list[str], declared: set[int], data: st.DataObject
) -> None:
    """Property 41: Secrets are reached only through gctx.secrets and never leak.

    Reading is allowed iff the secret is declared. Every value handed out is absent from: the
    redacted copy of random JSON-like data that embeds it, a scrubbed exception message, and
    the JSON log lines of a message, its arguments, an ``extra`` field and a traceback that all
    contain it.
    """
    names = [f"s{i}" for i in range(len(values))]
    environ = {f"MODRPC_SECRET_S{i}": v for i, v in enumerate(values)}
    declared_names = {f"s{i}" for i in declared if i < len(values)}
    manager = SecretsManager([EnvProvider(environ=environ)], ttl=30, allowed=_only(declared_names))

    async def read_all() -> list[str]:
        handed_out = []
        for name in names:
            if name in declared_names:
                handed_out.append((await manager.get(name)).reveal())
            else:
                with pytest.raises(PermissionDenied):
                    await manager.get(name)
        return handed_out

    handed_out = asyncio.run(read_all())
    assert sorted(handed_out) == sorted(
        environ[f"MODRPC_SECRET_{n.upper()}"] for n in declared_names
    )
    assert manager.redactor.values == frozenset(handed_out)
    if not handed_out:
        return

    payload = data.draw(embed(handed_out))
    redacted = manager.redact(payload)
    for text in strings_in(redacted):
        assert all(value not in text for value in handed_out), (text, handed_out)

    error = RuntimeError(f"failed with {handed_out[0]}")
    assert all(v not in str(manager.redactor.scrub_exception(error)) for v in handed_out)

    json_log.seek(0)
    json_log.truncate()
    handler = configure_logging("INFO", stream=json_log, filters=[manager.logging_filter()])
    log = logging.getLogger("test.property41")
    log.info("value %s and %r", handed_out[0], handed_out[-1], extra={"field": handed_out})
    try:
        raise ValueError(handed_out[0])
    except ValueError:
        log.exception("boom %s", handed_out[-1])
    logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert len(lines) == 2
    # The fields that carry logged content (ts/level/logger are the runtime's own words: a
    # one-letter secret may occur in "INFO" without anything having leaked).
    content = [lines[0]["message"], lines[0]["field"], lines[1]["message"], lines[1]["exc"]]
    for text in strings_in(content):
        assert all(value not in text for value in handed_out), (text, handed_out)
    assert MASK in lines[0]["message"]
