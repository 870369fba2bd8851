"""Property 32: config is immutable."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from runtime.config import Settings, load_settings

_IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
_ROLE = st.from_regex(r"[a-z]{1,8}", fullmatch=True)
_HASH = st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)

overrides = st.fixed_dictionaries(
    {},
    optional={
        "gateway_port": st.integers(0, 65535),
        "admin_port": st.integers(0, 65535),
        "host": st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "localhost"]),
        "log_level": st.sampled_from(["debug", "INFO", "Warning", "ERROR"]),
        "drain_seconds": st.floats(0, 600, allow_nan=False),
        "ratelimit_failure_mode": st.sampled_from(["open", "closed"]),
        "auth": st.fixed_dictionaries(
            {},
            optional={
                "issuer": _IDENT,
                "jwt_algorithms": st.lists(
                    st.sampled_from(["HS256", "RS256", "ES256"]), min_size=1, max_size=3
                ),
                "jwt_public_keys": st.lists(_IDENT.map(lambda s: f"/keys/{s}.pem"), max_size=3),
                "api_keys": st.dictionaries(
                    _IDENT,
                    st.fixed_dictionaries(
                        {"hash": _HASH, "subject": _IDENT, "roles": st.lists(_ROLE, max_size=3)}
                    ),
                    max_size=3,
                ),
            },
        ),
        "secrets": st.fixed_dictionaries(
            {},
            optional={
                "providers": st.lists(st.sampled_from(["env", "file"]), max_size=2),
                "ttl": st.floats(0, 3600, allow_nan=False),
            },
        ),
        "observability": st.fixed_dictionaries({}, optional={"service_name": _IDENT}),
    },
)


def _walk(value: Any, path: str = "settings") -> Iterator[tuple[str, Any]]:
    """Every object reachable from the settings through fields and container items."""
    yield path, value
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, f"{path}[{key!r}]")
    elif isinstance(value, tuple):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")


@pytest.fixture(scope="module")
def _isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Defaults only: no MODRPC_* variables and no modrpc.toml in the working directory."""
    saved = {k: v for k, v in os.environ.items() if k.upper().startswith("MODRPC_")}
    for key in saved:
        del os.environ[key]
    cwd = Path.cwd()
    os.chdir(tmp_path_factory.mktemp("config"))
    yield
    os.chdir(cwd)
    os.environ.update(saved)


@pytest.mark.usefixtures("_isolated")
@settings(max_examples=100, deadline=None)
@given(data=overrides, attribute=_IDENT, value=st.one_of(st.integers(), st.text(max_size=5)))
def test_every_mutation_of_settings_raises(
    data: dict[str, Any], attribute: str, value: Any
) -> None:
    """Property 32: Config is immutable.

    For random valid settings, every attempt to set or delete an attribute on the settings or on
    any nested model raises, every reachable mapping refuses item assignment and deletion, no
    mutable container (list, dict, set) is reachable at all, and the settings compare equal to a
    fresh load afterwards.
    """
    loaded = load_settings(**data)
    before = loaded.model_dump()
    for path, node in _walk(loaded):
        assert not isinstance(node, (list, dict, set, bytearray)), f"{path} is mutable"
        if isinstance(node, BaseModel):
            for name in [*type(node).model_fields, attribute]:
                with pytest.raises((TypeError, ValueError, AttributeError)):
                    setattr(node, name, value)
                with pytest.raises((TypeError, ValueError, AttributeError)):
                    delattr(node, name)
        elif isinstance(node, Mapping):
            with pytest.raises(TypeError):
                node[attribute] = value  # type: ignore[index]
            for key in list(node):
                with pytest.raises(TypeError):
                    del node[key]  # type: ignore[attr-defined]
            assert not hasattr(node, "pop") and not hasattr(node, "clear")
    assert loaded.model_dump() == before
    assert isinstance(loaded, Settings)
