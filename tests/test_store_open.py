"""A stream open's reads (realtime.store_open): the Redis script finds what the store's own
methods find one after another, for the same contents, in one round trip."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from realtime.store import HotStore, RedisHotStore
from realtime.store_memory import MemoryHotStore
from realtime.store_open import BATCH, OpenQuery, OpenView, gather, read_open
from streaming.events import Position
from tests.fakes import task_event

pytestmark = pytest.mark.services
SOURCE = "task.events"
P0, P1, P2 = (SOURCE, 0), (SOURCE, 1), (SOURCE, 2)


def query(user: int = 1, lease: str | None = "L", **overrides: object) -> OpenQuery:
    fields: dict[str, object] = {
        "user_id": user,
        "lease": lease,
        "opens_limit": 100,
        "streams_limit": 5,
        "lease_ttl": 30.0,
        "source": SOURCE,
        "cursor": None,
        "page_size": 4,
    }
    fields.update(overrides)
    return OpenQuery(**fields)  # type: ignore[arg-type]


async def fill(trimmed: bool, *stores: HotStore) -> None:
    """The same contents in each store. User 1: partition 0 (trimmed, if asked), partition
    1, and an old source's partition; user 2 has nothing. Heads of partitions 0 and 1; the
    source's epoch."""
    events = [task_event(1, n, partition=0) for n in range(400 if trimmed else 6)]
    events += [task_event(1, n, partition=1) for n in (100, 101, 102)]
    old = [task_event(1, n, partition=0) for n in (5, 6)]
    for e in old:
        e.position = Position("old.events", 0, e.position.offset)
    for store in stores:
        await store.append(events + old)
        await store.set_heads({P0: len(events) + 10, P1: 102})
        await store.set_epoch(SOURCE, "E1")


@pytest.fixture
async def redis_stores() -> AsyncIterator[Callable[[], RedisHotStore]]:
    url = os.environ.get("REDIS_URL")
    if not url:
        raise pytest.UsageError("REDIS_URL is not set: run `make test` (it starts Redis)")
    made: list[RedisHotStore] = []

    def make() -> RedisHotStore:
        made.append(RedisHotStore(url, f"ts-open-test-{uuid.uuid4().hex}", max_events=10))
        return made[-1]

    yield make
    for store in made:
        keys = [k async for k in store.redis.scan_iter(f"{store.p}:*")]
        if keys:
            await store.redis.delete(*keys)
        await store.close()


QUERIES = {
    "no cursor": query(),
    "cursor on one partition": query(cursor={P0: 2}),
    "trimmed, unnamed, unknown partitions": query(cursor={P0: 1, P1: 100, P2: 7}),
    "a cursor at the newest": query(cursor={P0: 5, P1: 102}),
    "no lease (replay_events)": query(lease=None, cursor={P1: -1}),
    "throttled": query(opens_limit=0, cursor={P0: 2}),
    "no slot free": query(streams_limit=0, cursor={P0: 2}),
    "a user with nothing stored": query(user=2, cursor={P0: 3}),
}


@pytest.mark.parametrize("trimmed", [False, True])
@pytest.mark.parametrize("name", list(QUERIES))
async def test_the_script_finds_what_the_store_methods_find(
    redis_stores: Callable[[], RedisHotStore], name: str, trimmed: bool
) -> None:
    by_script, by_methods = redis_stores(), redis_stores()
    await fill(trimmed, by_script, by_methods)
    expected = await gather(by_methods, QUERIES[name])
    found = await read_open(by_script, QUERIES[name])
    assert found == expected
    if trimmed and name.startswith("trimmed"):
        assert not found.pages[P0].complete  # the case the test is for is there
    # The script took what the methods took: a second open counts on, a slot stays held.
    again = query(streams_limit=1)
    assert (await read_open(by_script, again)) == (await gather(by_methods, again))


async def test_the_in_memory_store_finds_what_the_script_finds(
    redis_stores: Callable[[], RedisHotStore],
) -> None:
    redis_store, memory = redis_stores(), MemoryHotStore(max_events=10)
    await fill(False, redis_store, memory)
    for name, q in QUERIES.items():
        if name == "a user with nothing stored":
            continue  # Redis cannot vouch for a user whose partition index may have expired
        found: OpenView = await read_open(redis_store, q)
        assert found == await read_open(memory, q), name


async def test_the_first_page_is_the_replay_page_and_completeness_holds() -> None:
    store = MemoryHotStore(max_events=10)
    await fill(False, store)
    view = await read_open(store, query(cursor={P0: 2}))
    assert view.leased and view.epoch == "E1"
    assert [e.offset for e in view.pages[P0].events] == [3, 4, 5]
    assert [e.offset for e in view.pages[P1].events] == [100, 101, 102]  # unnamed: all
    assert ("old.events", 0) not in view.pages  # another source's partition is not replayed
    assert view.heads == {P0: 19}


async def test_a_redis_that_forgot_the_script_is_given_it_again(
    redis_stores: Callable[[], RedisHotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = redis_stores()
    await fill(False, store)
    real = store.redis.evalsha
    refused: list[str] = []

    async def forgetful(sha: str, *args: object) -> object:
        if not refused:  # as after a restart: SCRIPT FLUSH is not for a shared Redis
            refused.append(sha)
            raise NoScriptError("NOSCRIPT No matching script.")
        return await real(sha, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(store.redis, "evalsha", forgetful)
    view = await read_open(store, query(cursor={P0: 2}))
    assert refused and view.leased
    assert [e.offset for e in view.pages[P0].events] == [3, 4, 5]


async def test_the_opens_of_one_turn_of_the_loop_are_read_in_one_call(
    redis_stores: Callable[[], RedisHotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconnect storm's opens arrive together: they share script calls (at most
    ``BATCH`` opens each) instead of one call, and one pooled connection, each (#9, M5).
    Each still finds what it would find alone."""
    store = redis_stores()
    await fill(False, store)
    real = store.redis.evalsha
    calls: list[int] = []

    async def counted(sha: str, *args: object) -> object:
        calls.append(len(args))
        return await real(sha, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(store.redis, "evalsha", counted)
    asked = [
        query(lease=f"L{n}", opens_limit=1000, streams_limit=200, cursor={P0: n % 5})
        for n in range(120)
    ]
    views = await asyncio.gather(*(read_open(store, q) for q in asked))
    assert all(v.leased for v in views)
    assert len(calls) == -(-len(asked) // BATCH)  # 3 calls for 120 opens
    # Each open counted once; within a call in order (the calls themselves go concurrently).
    assert sorted(v.opens for v in views) == list(range(1, 121))
    assert [v.opens for v in views[:BATCH]] == sorted(v.opens for v in views[:BATCH])
    alone = await gather(
        store, query(lease="L-alone", opens_limit=1000, streams_limit=200, cursor={P0: 3})
    )
    assert views[3].pages == alone.pages and views[3].heads == alone.heads
    assert views[3].last == alone.last and views[3].epoch == alone.epoch


async def test_two_opens_of_a_user_in_one_call_take_one_slot_each(
    redis_stores: Callable[[], RedisHotStore],
) -> None:
    """The user's last free slot goes to the first open of the call; the second is refused,
    as when they came one after another."""
    store = redis_stores()
    await fill(False, store)
    first, second = await asyncio.gather(
        read_open(store, query(lease="A", streams_limit=1)),
        read_open(store, query(lease="B", streams_limit=1)),
    )
    assert (first.leased, second.leased) == (True, False)
    assert (first.opens, second.opens) == (1, 2)


async def test_a_failed_call_fails_each_open_in_it(
    redis_stores: Callable[[], RedisHotStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = redis_stores()

    async def unreachable(sha: str, *args: object) -> object:
        raise RedisConnectionError("Redis is restarting")

    monkeypatch.setattr(store.redis, "evalsha", unreachable)
    results = await asyncio.gather(
        *(read_open(store, query(lease=f"L{n}")) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RedisConnectionError) for r in results)
