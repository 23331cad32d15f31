"""The heads a process's idle streams share (realtime.heads): one store read for all."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from realtime.heads import SharedHeads
from realtime.store_memory import MemoryHotStore
from streaming.cursor import PartitionKey

P0, P1 = ("task.events", 0), ("task.events", 1)


class CountingStore(MemoryHotStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[list[PartitionKey]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def heads(self, keys: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        self.reads.append(list(keys))
        self.started.set()
        await self.gate.wait()
        return await super().heads(keys)


async def test_concurrent_heartbeats_share_one_read() -> None:
    store = CountingStore()
    await store.set_heads({P0: 5, P1: 9})
    store.gate.clear()
    shared = SharedHeads(store, max_age=60)
    waiting = [asyncio.ensure_future(shared.get([P0])) for _ in range(50)]
    async with asyncio.timeout(5):
        await store.started.wait()
    store.gate.set()
    assert await asyncio.gather(*waiting) == [{P0: 5}] * 50
    assert store.reads == [[P0]]


async def test_a_fresh_read_is_reused_until_it_is_older_than_max_age() -> None:
    store = CountingStore()
    await store.set_heads({P0: 5})
    shared = SharedHeads(store, max_age=60)
    assert await shared.get([P0]) == {P0: 5}
    await store.set_heads({P0: 7})
    assert await shared.get([P0]) == {P0: 5}  # within max_age: the shared value
    assert len(store.reads) == 1
    shared.max_age = -1.0  # every read is now too old
    assert await shared.get([P0]) == {P0: 7}
    assert len(store.reads) == 2


async def test_a_partition_not_read_yet_is_read_at_once() -> None:
    store = CountingStore()
    await store.set_heads({P0: 5, P1: 9})
    shared = SharedHeads(store, max_age=60)
    assert await shared.get([P0]) == {P0: 5}
    assert await shared.get([P1]) == {P1: 9}
    assert sorted(store.reads[-1]) == [P0, P1]  # every partition asked for, in one read


async def test_a_failed_read_reaches_the_waiters_and_the_next_call_reads_again() -> None:
    store = CountingStore()
    shared = SharedHeads(store, max_age=60)
    failing = True

    async def heads(keys: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        if failing:
            raise ConnectionError("redis is down")
        return {P0: 3}

    store.heads = heads  # type: ignore[method-assign]
    try:
        await shared.get([P0])
        raise AssertionError("the read's failure was swallowed")
    except ConnectionError:
        pass
    failing = False
    assert await shared.get([P0]) == {P0: 3}
