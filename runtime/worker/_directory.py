"""Where the modules a worker calls are: healthy workers from the manifest store, kept current.

The store is read when the worker starts and again whenever it reports a worker change, never
on the call path; the channel pool only ever sees the addresses of healthy workers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runtime.client import InstancePool

if TYPE_CHECKING:
    from runtime.store import ManifestStore

__all__ = ["WorkerDirectory"]

log = logging.getLogger("modrpc.directory")


class WorkerDirectory:
    """Feeds ``pool`` the addresses of healthy workers of ``modules`` from ``store``."""

    def __init__(self, store: ManifestStore, pool: InstancePool, modules: Sequence[str]) -> None:
        self._store = store
        self._pool = pool
        self._modules = tuple(modules)

    async def refresh(self) -> None:
        for module in self._modules:
            workers = await self._store.list_workers(module)
            addresses = sorted(w.address for w in workers if w.healthy)
            if tuple(addresses) != self._pool.addresses(module):
                log.info("module %s instances: %s", module, ", ".join(addresses) or "none")
            self._pool.update(module, addresses)

    async def run(self) -> None:
        """Refresh on every worker change the store reports; retry while the store is down.

        Each pass subscribes to the change feed first and reads the store second, so a worker
        that registers in between (after the read in ``Worker.start``, or while the store was
        unreachable) is in the read or in the feed, never in neither.
        """
        if not self._modules:
            return
        while True:
            try:
                async with self._store.watch() as events:
                    await self.refresh()
                    async for event in events:
                        if event.kind == "worker" and (event.module in self._modules or not event.module):
                            await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("store watch failed (%s); routing continues from the cached addresses", exc)
                await asyncio.sleep(1.0)
