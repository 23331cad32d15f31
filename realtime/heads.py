"""The partitions' heads as a process's idle streams read them (issue #9, M4).

Every idle stream's heartbeat asks for the heads of its partitions (``realtime.writer``):
one store read per stream per heartbeat was the largest part of an idle server's work
(py-spy, docs/benchmarks.md). Heads are per partition, the same for every stream, so the
process reads them once for all its streams, at most every ``max_age`` seconds, one read
at a time. A head read a moment ago is still a head: the stream advances its cursor less
far, never past what was consumed.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence

from realtime.store import HotStore
from streaming import conf
from streaming.cursor import PartitionKey


class SharedHeads:
    def __init__(self, store: HotStore, max_age: float) -> None:
        self.store = store
        self.max_age = max_age
        self._heads: dict[PartitionKey, int] = {}
        self._known: set[PartitionKey] = set()
        self._read_at = float("-inf")
        self._reading: asyncio.Task[None] | None = None

    async def get(self, keys: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        if not keys:
            return {}
        if time.monotonic() - self._read_at > self.max_age or not self._known.issuperset(keys):
            self._known.update(keys)
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._read(list(self._known)))
            # Shielded: a stream that goes away does not cancel the read the others await.
            await asyncio.shield(self._reading)
        return {key: self._heads[key] for key in keys if key in self._heads}

    async def _read(self, keys: list[PartitionKey]) -> None:
        try:
            self._heads = await self.store.heads(keys)
            self._read_at = time.monotonic()
        finally:
            self._reading = None


_shared: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakKeyDictionary[HotStore, SharedHeads]
] = weakref.WeakKeyDictionary()


def shared_heads(store: HotStore) -> SharedHeads:
    """The heads of ``store`` for this event loop's streams (fresh to within a second, or a
    heartbeat when heartbeats are shorter)."""
    loop = asyncio.get_running_loop()
    per_store = _shared.get(loop)
    if per_store is None:  # not ``setdefault``: it would build a dictionary per open
        per_store = _shared[loop] = weakref.WeakKeyDictionary()
    heads = per_store.get(store)
    if heads is None:
        heads = per_store[store] = SharedHeads(store, min(1.0, conf.get().HEARTBEAT_SECONDS))
    return heads
