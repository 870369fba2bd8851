"""The one pipeline that carries a call made at an old version to the version that serves it.

The gateway and the worker both meet callers pinned to an old version: the gateway when it
forwards to a newer worker, a worker when it is called directly at an old version. Both do the
same thing, in the same order, through :class:`Conversion`:

    request bytes at the caller's version ─ decode ─ check against that version's own schema
        ─ transform forward, one hop at a time ─▶ value
    value ─ transform backward, one hop at a time ─ encode at the caller's version ─▶ response bytes

The check is the caller's contract (SPEC §4): a caller pinned to an old version is held to that
version's schema and constraints before anything is transformed, and hears about its fields by
the names its version uses; a method its version has and the serving version dropped is
UNIMPLEMENTED naming the version, never INTERNAL.

(the gateway then encodes the value at the served version to forward it, and decodes the
worker's answer before transforming it back).

    conversion = plan(catalog, "CreateUser", "2025-01-15", served=("2025-06-01",))
    value = await conversion.request(payload, deadline)      # the 2025-06-01 shape
    answer = await conversion.response(response_value, deadline)   # 2025-01-15 bytes
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runtime.deadline import Deadline
from runtime.errors import InternalError
from runtime.versions._catalog import VersionCatalog
from runtime.versions._chain import TransformStep, run_chain
from runtime.versions._contract import check_request, method_error, same_request_contract
from runtime.wire import request_message, response_message

__all__ = ["Conversion", "plan"]


class Conversion:
    """A call to ``method`` made at ``version`` and served at ``target``, through ``steps``.

    At the served version itself it only decodes and encodes. ``transforms`` is False for a
    chain of compatible versions none of which has a transformer for this method: the request
    is still checked at its own version, but then its bytes are valid as they are. A method
    that ``version`` or ``target`` lacks refuses every call, UNIMPLEMENTED naming the version
    that removed it (:func:`~runtime.versions._contract.method_error`).
    """

    __slots__ = (
        "_check", "_new", "_old", "_refusal", "catalog", "hop_timeout", "method", "request_message",
        "response_message", "steps", "target", "transforms", "version",
    )  # fmt: skip

    def __init__(
        self,
        catalog: VersionCatalog,
        method: str,
        version: str,
        target: str,
        steps: Sequence[TransformStep] = (),
        *,
        transforms: bool = True,
        hop_timeout: float = 0.25,
    ) -> None:
        self.catalog = catalog
        self.method = method
        self.version = version
        self.target = target
        self.steps = tuple(steps)
        self.hop_timeout = hop_timeout
        self.request_message = request_message(method)
        self.response_message = response_message(method)
        self.transforms = transforms and bool(self.steps)
        self._old = catalog.wire(version)
        self._new = catalog.wire(target)
        self._check = version != target
        self._refusal = method_error(catalog, version, target, method)

    async def request(self, payload: bytes, deadline: Deadline | None) -> dict[str, Any]:
        """The request bytes a caller sent at ``version``, checked at that version, as a value in
        the ``target`` shape (in the caller's own shape when nothing transforms it)."""
        if self._refusal is not None:
            raise self._refusal
        value = self._old.decode(self.request_message, payload)
        if self._check:
            check_request(self.catalog, self.version, self.method, value)
        if not self.transforms:
            return value
        return await run_chain(
            self.steps, self.method, value, direction="forward", hop_timeout=self.hop_timeout,
            deadline_remaining=None if deadline is None else deadline.remaining,
        )  # fmt: skip

    async def response(self, value: dict[str, Any], deadline: Deadline | None) -> bytes:
        """A response value in the ``target`` shape, as bytes for the caller at ``version``."""
        if self.transforms:
            value = await run_chain(
                self.steps, self.method, value, direction="backward", hop_timeout=self.hop_timeout,
                deadline_remaining=None if deadline is None else deadline.remaining,
            )  # fmt: skip
        return self._encode(self._old, self.response_message, value, self.version)

    def encode_request(self, value: dict[str, Any]) -> bytes:
        """A ``target``-shaped request value as the bytes the serving version reads."""
        return self._encode(self._new, self.request_message, value, self.target)

    def decode_response(self, payload: bytes) -> dict[str, Any]:
        """The serving version's response bytes as a value, ready for :meth:`response`."""
        return self._new.decode(self.response_message, payload)

    def _encode(self, wire: Any, message: str, value: dict[str, Any], version: str) -> bytes:
        try:
            data: bytes = wire.encode(message, value)
        except TypeError as exc:
            kind = "transformed " if self.transforms else ""
            raise InternalError(f"{kind}{message} does not fit version {version}: {exc}") from exc
        return data


def plan(
    catalog: VersionCatalog, method: str, version: str, served: Sequence[str], *, hop_timeout: float = 0.25
) -> tuple[str, Conversion | None] | None:
    """Where a call to ``method`` at ``version`` goes, and the conversion it needs on the way.

    Returns the served version and either a :class:`Conversion` or None when the bytes pass
    through untouched: the caller's version is served and has the method, or nothing transforms
    it and its request means what the served version's does. A chain of
    compatible (non-breaking) versions none of which has a transformer for this method converts
    nothing (field numbers are never reused, so the old request bytes are valid new request
    bytes and the new response bytes read fine as the old response), but its request is still
    checked at its own version.

    A method that the caller's version lacks, or that the version serving it removed, gets a
    conversion that refuses every call, UNIMPLEMENTED naming the version that removed it; so
    does one that no served version can be reached for when the newest served version removed
    it (that answer does not change when a worker comes or goes). Otherwise None when no served
    version can be reached: a worker of the caller's version may yet come back.
    """
    found = catalog.route(version, served)
    if found is None:
        known = [v for v in served if v in catalog.by_id]
        if not known:
            return None
        newest = max(known, key=lambda v: catalog.by_id[v].created_at)
        if method_error(catalog, version, newest, method) is None:
            return None
        return newest, Conversion(catalog, method, version, newest, hop_timeout=hop_timeout)
    target, steps = found
    if version == target:
        if method_error(catalog, version, target, method) is None:
            return target, None
        return target, Conversion(catalog, method, version, target, hop_timeout=hop_timeout)
    transforms = any(
        catalog.by_id[step.to_version].breaking or method in step.forward or method in step.backward
        for step in steps
    )
    if (
        not transforms
        and method_error(catalog, version, target, method) is None
        and same_request_contract(catalog, version, target, method)
    ):
        return target, None  # the worker's own check at ``target`` is the caller's contract
    return target, Conversion(
        catalog, method, version, target, steps, transforms=transforms, hop_timeout=hop_timeout
    )
