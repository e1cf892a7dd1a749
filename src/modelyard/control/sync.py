"""Replicas sharing one store stay in step: a change made on one is in force on the others
within a second.

Every successful write through the management API stamps the store with a new generation;
each replica polls it (one indexed read every `interval` seconds) and, when it moved,
reloads what it serves from memory: endpoints, tokens, secrets and whatever else registered.
Polling needs nothing beyond the store, so it works the same on PostgreSQL and on one SQLite
file shared by several processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable

from modelyard.store import Store

log = logging.getLogger("modelyard.sync")

GENERATION = "generation"
Reloader = Callable[[], Awaitable[None]]


class ReplicaSync:
    """Stamps changes made here and reloads changes made by other replicas."""

    def __init__(self, store: Store, interval: float = 0.25) -> None:
        self._store = store
        self._interval = interval
        self._reloaders: list[Reloader] = []
        self._seen: str | None = None  # the stamp the poller read last
        self._task: asyncio.Task[None] | None = None

    def on_change(self, reloader: Reloader) -> None:
        """Run `reloader` whenever another replica changed the store."""
        self._reloaders.append(reloader)

    async def start(self) -> None:
        self._seen = await asyncio.to_thread(self._store.get_setting, GENERATION)
        self._task = asyncio.create_task(self._poll(), name="replica-sync")

    async def changed(self) -> None:
        """Tell the other replicas that this one changed the store."""
        # The poller reloads after our own stamps too: it cannot tell whether another replica
        # wrote one between two polls, and a reload of what did not change costs one read.
        await asyncio.to_thread(self._store.set_setting, GENERATION, uuid.uuid4().hex)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                stamp = await asyncio.to_thread(self._store.get_setting, GENERATION)
                if stamp != self._seen:
                    self._seen = stamp
                    for reload in self._reloaders:
                        await reload()
            except Exception:
                # A store hiccup must not end syncing; the next round tries again.
                log.exception("reloading changes from the store failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
