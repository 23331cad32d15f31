"""The hot store: recent events per user, partition heads, epochs and stream leases.

``consume_events`` writes each user's events here before pushing them live, so a stream
can replay what a client missed without touching Kafka, and can fill a hole left by a
message the channel layer dropped. Redis in production; an in-process twin for the
embedded mode and unit tests. Both keep the same contract, tested together.

Per user and partition, events are kept in order with the offset of the user's previous
event in that partition (``prev``): a stream that sees ``prev`` above the last offset it
sent knows it missed something.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from realtime import redis_scripts as scripts
from realtime.redis_purge import purge_source
from realtime.redis_retry import CONNECT_TIMEOUT, DRIVER_INFO, SOCKET_TIMEOUT, redis_retry
from streaming import conf
from streaming.cursor import PartitionKey
from streaming.events import TaskEvent

logger = logging.getLogger(__name__)

NO_PREV = -1  # the user's first event in this partition (as far as the store knows)
UNKNOWN_PREV = -2  # a redelivered record: it was stored before; skip the gap check


@dataclass(frozen=True, slots=True)
class StoredEvent:
    source: str
    partition: int
    offset: int
    prev: int
    body: str  # the SSE frame without its `id:` line (the stream adds the cursor)


@dataclass(frozen=True, slots=True)
class Page:
    events: list[StoredEvent]
    # True when nothing this user had after the requested offset is missing from the store
    # (it was never trimmed and the store knows this user's partitions).
    complete: bool


class HotStore(abc.ABC):
    def __init__(self, *, max_events: int = 1000, ttl_seconds: int = 7 * 86400) -> None:
        self.max_events = max_events
        self.ttl_seconds = ttl_seconds

    @abc.abstractmethod
    async def append(
        self,
        events: Sequence[TaskEvent],
        bodies: Sequence[str] | None = None,
        heads: dict[PartitionKey, int] | None = None,
    ) -> list[int]:
        """Store ``events`` (in Kafka order) with their SSE ``bodies`` (encoded here when
        not given), then raise the partitions' ``heads`` (``set_heads``); return each
        event's ``prev`` offset. The heads move only once the events are stored: a stream
        that sees a head reads every event of its user up to it (``realtime.writer``)."""

    def forget(self, partitions: Sequence[PartitionKey]) -> None:  # noqa: B027 (optional hook)
        """Drop what this process remembers of ``partitions`` (they moved to another
        consumer, which may append to them before they come back)."""

    @abc.abstractmethod
    async def read_after(self, user_id: int, key: PartitionKey, after: int, limit: int) -> Page: ...

    @abc.abstractmethod
    async def last(self, user_id: int) -> dict[PartitionKey, int]:
        """The offset of the user's latest stored event, per partition."""

    @abc.abstractmethod
    async def set_heads(self, heads: dict[PartitionKey, int]) -> None:
        """Record the highest offset consumed (and pushed) per partition; never lowers."""

    @abc.abstractmethod
    async def heads(self, keys: Sequence[PartitionKey]) -> dict[PartitionKey, int]: ...

    @abc.abstractmethod
    async def set_epoch(self, source: str, epoch: str) -> None: ...

    @abc.abstractmethod
    async def epoch(self, source: str) -> str | None: ...

    @abc.abstractmethod
    async def switch_epoch(self, source: str, epoch: str) -> str | None:
        """Make ``epoch`` the source's (``consume_events`` at start). When it replaces
        another, the topic was re-created: first forget every user's events of the source,
        their partition index entries and the source's heads, which name offsets of a topic
        that is gone (docs/operations.md, "Re-creating the events topic"). Return the
        replaced epoch, or None when nothing was replaced."""

    @abc.abstractmethod
    async def acquire_lease(self, user_id: int, lease: str, limit: int, ttl: float) -> bool:
        """Hold one of the user's ``limit`` stream slots for ``ttl`` seconds (renewable)."""

    async def renew_leases(self, leases: Sequence[tuple[int, str]], limit: int, ttl: float) -> None:
        """``acquire_lease`` for each ``(user_id, lease)``."""
        for user_id, lease in leases:
            await self.acquire_lease(user_id, lease, limit, ttl)

    async def release_lease(self, user_id: int, lease: str) -> None:
        await self.release_leases([(user_id, lease)])

    @abc.abstractmethod
    async def release_leases(self, leases: Sequence[tuple[int, str]]) -> None: ...

    @abc.abstractmethod
    async def count_hit(self, bucket: str, window: int) -> int:
        """Count one hit in the current ``window``-second bucket; return the count."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        pass


class RedisHotStore(HotStore):
    """The shared store of every server and consumer process.

    Keys (all under TASKSTREAM_REDIS_PREFIX, ``ts`` by default):
    ``r:{user}:{source}:{partition}``  a Redis stream per user and partition; entry id
        ``{offset}-1``, fields ``p`` (prev) and ``f`` (frame); capped at ``max_events``
        (approximately) and expiring ``ttl_seconds`` after the last write
    ``rp:{user}``  the set of ``{source}:{partition}`` the user has events in
    ``head:{source}:{partition}``  highest consumed offset; ``epoch:{source}``
    ``lease:{user}``  sorted set of stream leases by expiry; ``hit:{bucket}:{window}``
    """

    def __init__(self, url: str, prefix: str = "ts", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        import redis.asyncio

        self.p = prefix
        # A pool that waits for a free connection (the default raises past 100, which a
        # reconnect storm reaches), and retries a command a Redis restart broke.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=200, timeout=20, decode_responses=True, retry=redis_retry(),
            socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT,
            driver_info=DRIVER_INFO,
        )  # fmt: skip
        self.redis = redis.asyncio.Redis(connection_pool=pool)
        # Filled from Redis on first sight of a (user, partition): which offset came last.
        self._last: dict[tuple[int, PartitionKey], int] = {}

    def _key(self, user_id: int, key: PartitionKey) -> str:
        return f"{self.p}:r:{user_id}:{key[0]}:{key[1]}"

    async def append(
        self,
        events: Sequence[TaskEvent],
        bodies: Sequence[str] | None = None,
        heads: dict[PartitionKey, int] | None = None,
    ) -> list[int]:
        bodies = _bodies(events, bodies)
        missing = {
            (e.user_id, (e.position.source, e.position.partition))
            for e in events
            if (e.user_id, (e.position.source, e.position.partition)) not in self._last
        }
        if missing:
            ordered = list(missing)
            async with self.redis.pipeline(transaction=False) as pipe:
                for uid, pk in ordered:
                    pipe.xrevrange(self._key(uid, pk), count=1)
                found = await pipe.execute()
            for (uid, pk), newest in zip(ordered, found, strict=True):
                self._last[(uid, pk)] = _offset(newest[0][0]) if newest else NO_PREV
        prevs: list[int] = []
        entries: list[tuple[str, str, int, str]] = []
        indexes: set[tuple[str, str]] = set()
        for event, body in zip(events, bodies, strict=True):
            pos = event.position
            pk = (pos.source, pos.partition)
            last = self._last[(event.user_id, pk)]
            if pos.offset <= last:
                prevs.append(UNKNOWN_PREV)
                continue
            entries.append((self._key(event.user_id, pk), f"{pos.offset}-1", last, body))
            indexes.add((f"{self.p}:rp:{event.user_id}", f"{pk[0]}:{pk[1]}"))
            self._last[(event.user_id, pk)] = pos.offset
            prevs.append(last)
        # Offsets as text: Lua numbers are doubles.
        moved = [[f"{self.p}:head:{s}:{p}", str(o)] for (s, p), o in (heads or {}).items()]
        if not entries and not moved:
            return prevs
        payload = orjson.dumps({"e": entries, "i": sorted(indexes), "h": moved})
        try:
            # One script call with one argument per batch: a pipeline of 2,000 commands
            # spent most of its time packing and parsing them in Python (py-spy,
            # docs/benchmarks.md); the heads ride along (a round trip less per batch). The
            # script names keys it was not given, so the hot store needs a single Redis
            # (not Redis Cluster), like channels-redis.
            await scripts.run(
                self.redis, scripts.APPEND, 0, self.max_events, self.ttl_seconds, payload
            )
        except BaseException:
            # The cache ran ahead of Redis: forget it, so a retry re-reads what was stored.
            self._last.clear()
            raise
        if len(self._last) > 100_000:
            self._last.clear()  # a cache: refilled from Redis on demand
        return prevs

    def forget(self, partitions: Sequence[PartitionKey]) -> None:
        gone = set(partitions)
        for key in [k for k in self._last if k[1] in gone]:
            del self._last[key]

    async def read_after(self, user_id: int, key: PartitionKey, after: int, limit: int) -> Page:
        stream = self._key(user_id, key)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(stream, min=f"({after}-1" if after >= 0 else "-", max="+", count=limit)
            pipe.xrange(stream, min="-", max="+", count=1)
            pipe.xlen(stream)
            pipe.sismember(f"{self.p}:rp:{user_id}", f"{key[0]}:{key[1]}")
            pipe.exists(f"{self.p}:rp:{user_id}")
            entries, first, length, listed, index_exists = await pipe.execute()
        events = [
            StoredEvent(key[0], key[1], _offset(entry_id), int(fields["p"]), fields["f"])
            for entry_id, fields in entries
        ]
        if first:
            # The oldest entry kept names the user's event before it (``p``): if that is at
            # or before the cursor, trimming removed nothing the client still needs.
            complete = int(first[0][1]["p"]) <= after
        else:
            # No events here: complete only if the user's partition index says so.
            complete = bool(index_exists) and not listed and not length
        return Page(events, complete)

    async def last(self, user_id: int) -> dict[PartitionKey, int]:
        members = await self.redis.smembers(f"{self.p}:rp:{user_id}")
        keys = [_partition_key(str(m)) for m in members]
        async with self.redis.pipeline(transaction=False) as pipe:
            for pk in keys:
                pipe.xrevrange(self._key(user_id, pk), count=1)
            found = await pipe.execute()
        return {pk: _offset(e[0][0]) for pk, e in zip(keys, found, strict=True) if e}

    async def set_heads(self, heads: dict[PartitionKey, int]) -> None:
        await self.append([], heads=heads)

    async def heads(self, keys: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        if not keys:
            return {}
        values = await self.redis.mget([f"{self.p}:head:{s}:{p}" for s, p in keys])
        return {k: int(v) for k, v in zip(keys, values, strict=True) if v is not None}

    async def set_epoch(self, source: str, epoch: str) -> None:
        await self.redis.set(f"{self.p}:epoch:{source}", epoch)

    async def epoch(self, source: str) -> str | None:
        value = await self.redis.get(f"{self.p}:epoch:{source}")
        return None if value is None else str(value)

    async def switch_epoch(self, source: str, epoch: str) -> str | None:
        # One process at a time: a consumer that switched and began to append must not
        # lose its events to another consumer's purge, started on the same old epoch.
        lock = self.redis.lock(f"{self.p}:epoch-lock:{source}", timeout=600, blocking_timeout=660)
        async with lock:
            replaced = await self.epoch(source)
            if replaced not in (None, epoch):
                keys, indexes = await purge_source(self.redis, self.p, source)
                logger.warning(
                    "the topic %s was re-created: epoch %s replaces %s; forgot %d keys and "
                    "%d users' entries of the old topic",
                    source, epoch, replaced, keys, indexes,
                )  # fmt: skip
            # The epoch moves last: a stream opening meanwhile sees the old epoch with fewer
            # events, then the new epoch's first event closes it (epoch-changed).
            await self.set_epoch(source, epoch)
        self._last.clear()
        logger.info("epoch of %s is %s", source, epoch)
        return None if replaced == epoch else replaced

    async def acquire_lease(self, user_id: int, lease: str, limit: int, ttl: float) -> bool:
        acquired = await scripts.run(
            self.redis,
            scripts.ACQUIRE_LEASE,
            1,
            f"{self.p}:lease:{user_id}",
            lease,
            limit,
            ttl,
            time.time(),
        )
        return bool(acquired)

    async def renew_leases(self, leases: Sequence[tuple[int, str]], limit: int, ttl: float) -> None:
        if leases:
            pairs = self._lease_pairs(leases)
            await scripts.run(self.redis, scripts.RENEW_LEASES, 0, limit, ttl, time.time(), *pairs)

    async def release_leases(self, leases: Sequence[tuple[int, str]]) -> None:
        if leases:  # one reply: a pipeline's 1,000 replies each armed a read timeout
            await scripts.run(self.redis, scripts.RELEASE_LEASES, 0, *self._lease_pairs(leases))

    def _lease_pairs(self, leases: Sequence[tuple[int, str]]) -> list[str]:
        return [v for user_id, lease in leases for v in (f"{self.p}:lease:{user_id}", lease)]

    def hit_key(self, bucket: str, window: int) -> str:
        return f"{self.p}:hit:{bucket}:{int(time.time()) // window}"

    async def count_hit(self, bucket: str, window: int) -> int:
        key = self.hit_key(bucket, window)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, window * 2)
            count, _ = await pipe.execute()
        return int(count)

    async def close(self) -> None:
        await self.redis.aclose()


def _offset(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _partition_key(member: str) -> PartitionKey:
    source, _, partition = member.rpartition(":")
    return source, int(partition)


_memory_store: HotStore | None = None
_redis_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisHotStore] = (
    weakref.WeakKeyDictionary()
)


def get_store() -> HotStore:
    """This process's store: Redis when REDIS_URL is set (one client per event loop, as
    redis-py's asyncio clients are bound to one), else one in-memory store."""
    global _memory_store
    settings = conf.get()
    sizes = {"max_events": settings.REPLAY_MAX_EVENTS, "ttl_seconds": settings.REPLAY_TTL_SECONDS}
    if not settings.REDIS_URL:
        if _memory_store is None:
            # Imported here: the embedded mode's twin imports this module's contract.
            from realtime.store_memory import MemoryHotStore

            _memory_store = MemoryHotStore(**sizes)
        return _memory_store
    loop = asyncio.get_running_loop()
    store = _redis_stores.get(loop)
    if store is None:
        store = _redis_stores[loop] = RedisHotStore(
            settings.REDIS_URL, settings.REDIS_PREFIX, **sizes
        )
    return store


def reset_memory_store() -> None:
    """Forget the in-memory store (tests)."""
    global _memory_store
    _memory_store = None


def _bodies(events: Sequence[TaskEvent], bodies: Sequence[str] | None) -> Sequence[str]:
    return [e.sse_body() for e in events] if bodies is None else bodies
