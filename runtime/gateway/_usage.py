"""Usage reporting: the gateway's per-version call counts reach the store, off the call path.

A call only bumps an in-memory counter (``Usage.count``). Every few seconds this reporter swaps
the counter for a fresh one and appends the counts to the store's usage stream, where every
gateway's counts add up (``runtime.versions.record_usage``); the lifecycle classifies versions
hot, warm or cold from that. A call to a cold version asks for its promotion, which the reporter
writes on its next tick, so the next route table sees the version warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING

from runtime.versions import promote, record_usage

if TYPE_CHECKING:
    from runtime.store import ManifestStore

__all__ = ["UsageReporter"]

log = logging.getLogger("modrpc.gateway")

FLUSH_SECONDS = 5.0


class UsageReporter:
    """Flushes ``usage`` counts to ``store`` every ``interval`` seconds and promotes cold versions."""

    def __init__(self, store: ManifestStore, counts: Counter[tuple[str, str]], *, interval: float = FLUSH_SECONDS) -> None:
        self._store = store
        self._counts = counts
        self._interval = interval
        self._promote: set[tuple[str, str]] = set()
        self._promoted: set[tuple[str, str]] = set()
        self._stop = asyncio.Event()

    def promote_soon(self, module: str, version: str) -> None:
        """Ask (cheaply, from the call path) for ``version`` to be promoted from cold to warm."""
        key = (module, version)
        if key not in self._promoted:
            self._promote.add(key)

    def forget_promotions(self) -> None:
        """A new route table knows the current states; let later cold calls ask again."""
        self._promoted.clear()

    async def flush(self) -> None:
        now = time.time()
        pending, self._promote = self._promote, set()
        for module, version in sorted(pending):
            try:
                await promote(self._store, module, version, now=now)
                self._promoted.add((module, version))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not promote %s %s (%s); will retry", module, version, exc)
                self._promote.add((module, version))
        if not self._counts:
            return
        taken = Counter(self._counts)
        self._counts.clear()
        by_module: dict[str, dict[str, int]] = {}
        for (module, version), n in taken.items():
            by_module.setdefault(module, {})[version] = n
        for module, counts in sorted(by_module.items()):
            try:
                await record_usage(self._store, module, counts, now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the counts for the next tick
                later = "keeping it for the next flush" if not self._stop.is_set() else "it is lost"
                log.warning("could not record usage of %s (%s); %s", module, exc, later)
                for version, n in counts.items():
                    self._counts[(module, version)] += n

    async def run(self) -> None:
        """Flush every ``interval`` until :meth:`stop`, then once more, and end.

        Never cancel it to stop it: a flush cut short loses the counts it had taken.
        """
        while True:
            stopping = self._stop.is_set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stop.wait()
            await self.flush()
            if stopping:  # this flush began after the stop was asked for: nothing is left
                return

    def stop(self) -> None:
        """Ask :meth:`run` to write what is left and end."""
        self._stop.set()
