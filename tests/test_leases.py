"""A process's stream leases, renewed together (realtime.leases)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from realtime.leases import LeaseKeeper
from realtime.store_memory import MemoryHotStore


class RecordingStore(MemoryHotStore):
    def __init__(self) -> None:
        super().__init__()
        self.renewals: list[list[tuple[int, str]]] = []
        self.renewed = asyncio.Event()

    async def renew_leases(self, leases: Sequence[tuple[int, str]], limit: int, ttl: float) -> None:
        self.renewals.append(list(leases))
        self.renewed.set()
        await super().renew_leases(leases, limit, ttl)


async def test_held_leases_are_renewed_in_one_call_and_dropped_ones_not(settings: Any) -> None:
    settings.TASKSTREAM = {**settings.TASKSTREAM, "HEARTBEAT_SECONDS": 60.0}
    store = RecordingStore()
    keeper = LeaseKeeper(store)
    keeper.hold(1, "a")
    keeper.hold(2, "b")
    keeper.hold(1, "c")
    keeper.drop("b")
    await keeper.renew_all()
    assert store.renewals == [[(1, "a"), (1, "c")]]
    keeper.drop("a")
    keeper.drop("c")


async def test_the_keeper_renews_every_heartbeat_interval_while_it_holds_any(
    settings: Any,
) -> None:
    settings.TASKSTREAM = {**settings.TASKSTREAM, "HEARTBEAT_SECONDS": 0.05}
    store = RecordingStore()
    keeper = LeaseKeeper(store)
    keeper.hold(7, "x")
    async with asyncio.timeout(5):
        await store.renewed.wait()
    assert store.renewals[0] == [(7, "x")]
    keeper.drop("x")
    assert keeper._task is not None
    async with asyncio.timeout(5):  # with nothing held, the loop ends
        await keeper._task


async def test_leases_released_together_take_one_store_call_that_each_awaits() -> None:
    store = RecordingStore()
    calls: list[list[tuple[int, str]]] = []
    real = store.release_leases

    async def recording(leases: Sequence[tuple[int, str]]) -> None:
        calls.append(list(leases))
        await real(leases)

    store.release_leases = recording  # type: ignore[method-assign]
    for lease in ("a", "b", "c"):
        assert await store.acquire_lease(1, lease, limit=3, ttl=30)
    keeper = LeaseKeeper(store)
    for lease in ("a", "b", "c"):
        keeper.hold(1, lease)
    await asyncio.gather(*(keeper.release(1, lease) for lease in ("a", "b", "c")))
    assert calls == [[(1, "a"), (1, "b"), (1, "c")]]
    assert not keeper.held
    for lease in ("x", "y", "z"):  # every slot was freed before release() returned
        assert await store.acquire_lease(1, lease, limit=3, ttl=30)
    await keeper.release(1, "x")  # a later release is a call of its own
    assert calls[-1] == [(1, "x")]
