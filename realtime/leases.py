"""A process's stream leases, renewed and released together (issue #9, M4 and M5).

A running stream holds one of its user's stream slots (``realtime.admission``): a lease in
the hot store that lapses unless renewed. Each stream used to renew its own at every
heartbeat, one store call per stream; with thousands of idle streams that was a large part
of the server's work (py-spy, docs/benchmarks.md). Here the process renews all the leases
its streams hold in one call per heartbeat interval (in chunks), well within the lease's
time to live (``admission.lease_ttl``). Streams that end at once are released together.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from realtime.admission import lease_ttl
from realtime.store import HotStore
from streaming import conf

logger = logging.getLogger(__name__)
CHUNK = 1000  # leases per store call


class LeaseKeeper:
    def __init__(self, store: HotStore) -> None:
        self.store = store
        self.held: dict[str, int] = {}  # lease -> user id
        self._task: asyncio.Task[None] | None = None
        # Leases to release in the next store call, and that call (once started).
        self._releasing: list[tuple[int, str]] = []
        self._release: asyncio.Future[None] | None = None

    def hold(self, user_id: int, lease: str) -> None:
        """Renew ``lease`` with the others from now on (the open just took it)."""
        self.held[lease] = user_id
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._renew_loop(), name="lease-keeper")

    def drop(self, lease: str) -> None:
        self.held.pop(lease, None)

    async def release(self, user_id: int, lease: str) -> None:
        """Stop renewing ``lease`` and free its slot. The streams that end together (a
        reconnect storm's first half) are released in one store call, which each awaits."""
        self.drop(lease)
        self._releasing.append((user_id, lease))
        if self._release is None:
            self._release = asyncio.ensure_future(self._release_pending())
        # Shielded: a caller that gives up (its clean-up's time bound) leaves it to the rest.
        await asyncio.shield(self._release)

    async def _release_pending(self) -> None:
        await asyncio.sleep(0)  # the streams ending in this turn of the loop join in
        # Taken, and the next caller starts the next call: nobody waits on a call that
        # does not include their lease.
        batch, self._releasing, self._release = self._releasing, [], None
        for start in range(0, len(batch), CHUNK):
            await self.store.release_leases(batch[start : start + CHUNK])

    async def renew_all(self) -> None:
        held = [(user_id, lease) for lease, user_id in self.held.items()]
        limit = conf.get().MAX_STREAMS_PER_USER
        for start in range(0, len(held), CHUNK):
            await self.store.renew_leases(held[start : start + CHUNK], limit, lease_ttl())

    async def _renew_loop(self) -> None:
        while self.held:
            await asyncio.sleep(conf.get().HEARTBEAT_SECONDS)
            try:
                await self.renew_all()
            except Exception as exc:  # Redis restarting: the next round renews them
                logger.warning("leases not renewed: %s", exc)


_keepers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakKeyDictionary[HotStore, LeaseKeeper]
] = weakref.WeakKeyDictionary()


def lease_keeper(store: HotStore) -> LeaseKeeper:
    """The keeper of ``store``'s leases for this event loop's streams."""
    per_store = _keepers.setdefault(asyncio.get_running_loop(), weakref.WeakKeyDictionary())
    keeper = per_store.get(store)
    if keeper is None:
        keeper = per_store[store] = LeaseKeeper(store)
    return keeper
