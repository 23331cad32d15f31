"""The hot store's in-process twin (``realtime.store`` has the contract and the Redis
store): the embedded mode and unit tests. tests/test_store.py runs the same contract
against both."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from realtime.store import NO_PREV, UNKNOWN_PREV, HotStore, Page, StoredEvent, _bodies
from streaming.cursor import PartitionKey
from streaming.events import TaskEvent


class MemoryHotStore(HotStore):
    """One process's store: the embedded mode and the stream's unit tests."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._events: dict[tuple[int, PartitionKey], list[StoredEvent]] = defaultdict(list)
        self._trimmed: dict[tuple[int, PartitionKey], int] = {}
        self._last: dict[tuple[int, PartitionKey], int] = {}
        self._heads: dict[PartitionKey, int] = {}
        self._epochs: dict[str, str] = {}
        self._leases: dict[int, dict[str, float]] = defaultdict(dict)
        self._hits: dict[str, int] = defaultdict(int)

    async def append(
        self,
        events: Sequence[TaskEvent],
        bodies: Sequence[str] | None = None,
        heads: dict[PartitionKey, int] | None = None,
    ) -> list[int]:
        prevs = self._append(events, _bodies(events, bodies))
        await self.set_heads(heads or {})
        return prevs

    def _append(self, events: Sequence[TaskEvent], bodies: Sequence[str]) -> list[int]:
        prevs: list[int] = []
        for event, body in zip(events, bodies, strict=True):
            pos = event.position
            key = (event.user_id, (pos.source, pos.partition))
            last = self._last.get(key, NO_PREV)
            if pos.offset <= last:
                prevs.append(UNKNOWN_PREV)
                continue
            stored = self._events[key]
            stored.append(StoredEvent(pos.source, pos.partition, pos.offset, last, body))
            if len(stored) > self.max_events:
                self._trimmed[key] = stored.pop(0).offset
            self._last[key] = pos.offset
            prevs.append(last)
        return prevs

    async def read_after(self, user_id: int, key: PartitionKey, after: int, limit: int) -> Page:
        full_key = (user_id, key)
        events = [e for e in self._events.get(full_key, []) if e.offset > after][:limit]
        return Page(events, complete=self._trimmed.get(full_key, NO_PREV) <= after)

    async def last(self, user_id: int) -> dict[PartitionKey, int]:
        return {pk: offset for (uid, pk), offset in self._last.items() if uid == user_id}

    async def set_heads(self, heads: dict[PartitionKey, int]) -> None:
        for key, offset in heads.items():
            self._heads[key] = max(offset, self._heads.get(key, NO_PREV))

    async def heads(self, keys: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        return {k: self._heads[k] for k in keys if k in self._heads}

    async def set_epoch(self, source: str, epoch: str) -> None:
        self._epochs[source] = epoch

    async def epoch(self, source: str) -> str | None:
        return self._epochs.get(source)

    async def switch_epoch(self, source: str, epoch: str) -> str | None:
        replaced = self._epochs.get(source)
        if replaced not in (None, epoch):
            for stored in (self._events, self._trimmed, self._last):
                for key in [k for k in stored if k[1][0] == source]:
                    del stored[key]
            for head in [k for k in self._heads if k[0] == source]:
                del self._heads[head]
        self._epochs[source] = epoch
        return None if replaced == epoch else replaced

    async def acquire_lease(self, user_id: int, lease: str, limit: int, ttl: float) -> bool:
        now = time.monotonic()
        leases = self._leases[user_id]
        for name, expiry in list(leases.items()):
            if expiry <= now:
                del leases[name]
        if lease not in leases and len(leases) >= limit:
            return False
        leases[lease] = now + ttl
        return True

    async def release_leases(self, leases: Sequence[tuple[int, str]]) -> None:
        for user_id, lease in leases:
            self._leases[user_id].pop(lease, None)

    async def count_hit(self, bucket: str, window: int) -> int:
        current = int(time.time()) // window
        key = f"{bucket}:{current}"
        if key not in self._hits and len(self._hits) > 10_000:
            # Old windows only ever grow the dict: drop them all, the current ones restart.
            self._hits.clear()
        self._hits[key] += 1
        return self._hits[key]
