"""Read-only configuration as a handler sees it (``gctx.config``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["ReadOnlyConfig", "freeze"]


def freeze(value: Any) -> Any:
    """A deep, immutable copy: mappings become read-only views, lists become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set | frozenset):
        return frozenset(freeze(v) for v in value)
    return value


class ReadOnlyConfig(Mapping[str, Any]):
    """A mapping that refuses every change, also to nested values.

    >>> cfg = ReadOnlyConfig({"limits": {"max": 3}})
    >>> cfg["limits"]["max"]
    3
    >>> cfg.limits = {}
    Traceback (most recent call last):
    TypeError: config is read-only: cannot set 'limits'
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", freeze(dict(data)))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(f"config has no key {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise TypeError(f"config is read-only: cannot set {key!r}")

    def __delattr__(self, key: str) -> None:
        raise TypeError(f"config is read-only: cannot delete {key!r}")

    def __setitem__(self, key: str, value: Any) -> None:
        raise TypeError(f"config is read-only: cannot set {key!r}")

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"config is read-only: cannot delete {key!r}")

    def __repr__(self) -> str:
        return f"ReadOnlyConfig({dict(self._data)!r})"
