"""The hot store's contract, held by both implementations: in-memory and Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import NoScriptError

from realtime.store import NO_PREV, UNKNOWN_PREV, HotStore, RedisHotStore
from realtime.store_memory import MemoryHotStore
from streaming.events import Position, TaskEvent
from tests.fakes import task_event

KEY = ("task.events", 1)


def event(user_id: int, offset: int) -> TaskEvent:
    return task_event(user_id, offset, partition=1)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.services)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[HotStore]:
    if request.param == "memory":
        yield MemoryHotStore(max_events=10)
        return
    async for redis_store in _redis_store():
        yield redis_store


@pytest.fixture
async def redis_store() -> AsyncIterator[RedisHotStore]:
    async for store in _redis_store():
        yield store


async def _redis_store() -> AsyncIterator[RedisHotStore]:
    url = os.environ.get("REDIS_URL")
    if not url:
        raise pytest.UsageError("REDIS_URL is not set: run `make test` (it starts Redis)")
    redis_store = RedisHotStore(url, f"ts-store-test-{uuid.uuid4().hex}", max_events=10)
    yield redis_store
    keys = [k async for k in redis_store.redis.scan_iter(f"{redis_store.p}:*")]
    if keys:
        await redis_store.redis.delete(*keys)
    await redis_store.close()


async def test_append_returns_each_users_previous_offset_and_skips_redeliveries(
    store: HotStore,
) -> None:
    prevs = await store.append([event(1, 5), event(2, 6), event(1, 9)])
    assert prevs == [NO_PREV, NO_PREV, 5]
    assert await store.append([event(1, 9), event(1, 12)]) == [UNKNOWN_PREV, 9]
    assert await store.last(1) == {KEY: 12}


async def test_read_after_pages_in_order_and_knows_it_is_complete(store: HotStore) -> None:
    await store.append([event(1, n) for n in range(0, 8)])
    page = await store.read_after(1, KEY, 2, limit=3)
    assert [e.offset for e in page.events] == [3, 4, 5]
    assert [e.prev for e in page.events] == [2, 3, 4]
    assert page.complete
    assert "event: task.progress" in page.events[0].body


async def test_trimming_makes_old_cursors_incomplete_but_not_recent_ones(store: HotStore) -> None:
    await store.append([event(1, n) for n in range(0, 400)])
    # Redis trims approximately (whole nodes); the in-memory store exactly. Either way
    # the oldest events are gone and a cursor before them cannot be served completely.
    assert not (await store.read_after(1, KEY, 3, limit=5)).complete
    assert (await store.read_after(1, KEY, 398, limit=5)).complete


async def test_a_partition_the_user_never_had_events_in_is_complete_and_empty(
    store: HotStore,
) -> None:
    await store.append([event(1, 3)])
    page = await store.read_after(1, ("task.events", 0), 10, limit=5)
    assert page.events == [] and page.complete


async def test_heads_only_move_forward_and_epochs_are_kept(store: HotStore) -> None:
    await store.set_heads({KEY: 10})
    await store.set_heads({KEY: 7})
    assert await store.heads([KEY, ("task.events", 0)]) == {KEY: 10}
    await store.set_epoch("task.events", "E1")
    assert await store.epoch("task.events") == "E1"
    assert await store.epoch("other") is None


async def test_a_new_epoch_forgets_the_old_topics_events_indexes_and_heads_only(
    store: HotStore,
) -> None:
    # Another topic whose name starts the same: its keys match the same patterns.
    other = ("task.events.b", 1)

    def elsewhere(user_id: int, offset: int) -> TaskEvent:
        return dataclasses.replace(event(user_id, offset), position=Position(*other, offset))

    assert await store.switch_epoch("task.events", "E1") is None
    await store.append([event(1, 4), event(2, 5), elsewhere(1, 7)], heads={KEY: 5, other: 7})
    assert await store.switch_epoch("task.events", "E1") is None  # a restart: nothing lost
    assert await store.last(1) == {KEY: 4, other: 7}

    assert await store.switch_epoch("task.events", "E2") == "E1"  # the topic was re-created
    assert await store.epoch("task.events") == "E2"
    assert await store.last(1) == {other: 7}
    assert await store.last(2) == {}
    assert await store.heads([KEY, other]) == {other: 7}
    # Nothing of the user's is missing in the new topic's partition: complete, empty.
    page = await store.read_after(1, KEY, -1, limit=5)
    assert page.events == [] and page.complete
    # The new topic's offsets start again, below the old ones: stored, as first events.
    assert await store.append([event(1, 0), event(1, 2)], heads={KEY: 2}) == [NO_PREV, 0]
    assert [e.offset for e in (await store.read_after(1, KEY, -1, limit=5)).events] == [0, 2]
    assert await store.heads([KEY]) == {KEY: 2}


@pytest.mark.services
async def test_consumers_starting_together_on_a_new_epoch_purge_once(
    redis_store: RedisHotStore,
) -> None:
    await redis_store.set_epoch("task.events", "E1")
    await redis_store.append([event(1, 4)])
    other = RedisHotStore(os.environ["REDIS_URL"], redis_store.p, max_events=10)
    try:
        replaced = await asyncio.gather(
            redis_store.switch_epoch("task.events", "E2"), other.switch_epoch("task.events", "E2")
        )
    finally:
        await other.close()
    assert sorted(replaced, key=str) == ["E1", None]
    assert await redis_store.last(1) == {}


async def test_append_raises_the_heads_with_the_events_never_lowers_them(store: HotStore) -> None:
    other = ("task.events", 0)
    big = 2**53 + 1  # not a double: the script must keep it exact
    await store.append([event(1, 4), event(1, 8)], heads={KEY: 9, other: big})
    assert await store.heads([KEY, other]) == {KEY: 9, other: big}
    assert [e.offset for e in (await store.read_after(1, KEY, -1, limit=5)).events] == [4, 8]
    # A batch with nothing to store still moves the heads (and a stale one does not).
    await store.append([], heads={KEY: 12})
    await store.append([event(1, 11)], heads={KEY: 11})
    assert await store.heads([KEY]) == {KEY: 12}


async def test_leases_cap_concurrent_streams_per_user(store: HotStore) -> None:
    assert await store.acquire_lease(1, "a", limit=2, ttl=30)
    assert await store.acquire_lease(1, "b", limit=2, ttl=30)
    assert not await store.acquire_lease(1, "c", limit=2, ttl=30)
    assert await store.acquire_lease(1, "a", limit=2, ttl=30)  # renewing your own slot
    assert await store.acquire_lease(2, "c", limit=2, ttl=30)  # other users are separate
    await store.release_lease(1, "b")
    assert await store.acquire_lease(1, "c", limit=2, ttl=30)


async def test_hits_are_counted_per_bucket(store: HotStore) -> None:
    assert [await store.count_hit("open:1", 60) for _ in range(3)] == [1, 2, 3]
    assert await store.count_hit("open:2", 60) == 1


async def test_leases_renewed_together_outlive_their_first_ttl(store: HotStore) -> None:
    assert await store.acquire_lease(1, "a", limit=1, ttl=0.3)
    assert await store.acquire_lease(2, "b", limit=1, ttl=0.3)
    await store.renew_leases([(1, "a")], limit=1, ttl=30)
    await asyncio.sleep(0.5)  # past the first ttl: what was not renewed has expired
    assert not await store.acquire_lease(1, "c", limit=1, ttl=30)  # "a" still holds it
    assert await store.acquire_lease(2, "c", limit=1, ttl=30)  # "b" lapsed


@pytest.mark.services
async def test_scripts_go_by_sha_and_a_redis_that_forgot_them_gets_them_again(
    redis_store: RedisHotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's scripts are called by SHA1 (their text is not sent on every call); after
    a restart or SCRIPT FLUSH, EVALSHA fails once per script and EVAL runs (and caches) it."""
    store = redis_store
    real_evalsha, real_eval = store.redis.evalsha, store.redis.eval
    refused: list[str] = []
    evals: list[str] = []

    async def forgetful(sha: str, *args: object) -> object:
        if sha not in refused:  # as after a restart (SCRIPT FLUSH is not for a shared Redis)
            refused.append(sha)
            raise NoScriptError("NOSCRIPT No matching script.")
        return await real_evalsha(sha, *args)  # type: ignore[arg-type]

    async def counted(script: str, *args: object) -> object:
        evals.append(script)
        return await real_eval(script, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(store.redis, "evalsha", forgetful)
    monkeypatch.setattr(store.redis, "eval", counted)
    assert await store.append([event(1, 5)]) == [NO_PREV]
    assert await store.append([event(1, 7)]) == [5]  # by SHA now: no second EVAL
    assert await store.acquire_lease(1, "a", limit=1, ttl=30)
    assert not await store.acquire_lease(1, "b", limit=1, ttl=30)
    await store.release_leases([(1, "a")])
    assert await store.acquire_lease(1, "b", limit=1, ttl=30)
    assert len(refused) == 3 and len(evals) == 3  # append, acquire, release: once each
    assert [e.offset for e in (await store.read_after(1, KEY, -1, 10)).events] == [5, 7]
