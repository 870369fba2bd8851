"""The :class:`Secret` value type: a secret that does not print itself."""

from __future__ import annotations

import hmac
from typing import Any, NoReturn, final

__all__ = ["MASK", "Secret"]

MASK = "***"
"""What a secret value is replaced with wherever it would otherwise be shown."""


@final
class Secret:
    """A named secret value. ``repr``, ``str`` and f-strings show ``Secret('name', '***')``.

    The value is reachable only through :meth:`reveal`, so an accidental ``log.info("%s", s)`` or
    ``f"{s}"`` never prints it. Pickling is refused for the same reason.

        >>> s = Secret("db_password", "hunter2")
        >>> f"{s}"
        "Secret('db_password', '***')"
        >>> s.reveal()
        'hunter2'
    """

    __slots__ = ("_name", "_value")

    def __init__(self, name: str, value: str) -> None:
        self._name = name
        self._value = value

    @property
    def name(self) -> str:
        return self._name

    def reveal(self) -> str:
        """The secret value. Call it at the point of use, never to log or store it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self._name!r}, {MASK!r})"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return format(repr(self), format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time, so comparing secrets does not leak their contents through timing.
        return self._name == other._name and hmac.compare_digest(
            self._value.encode(), other._value.encode()
        )

    def __hash__(self) -> int:
        return hash(("Secret", self._name))

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{self!r} cannot be pickled")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self
