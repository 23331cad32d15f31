"""A stream open's reads from the hot store, in one round trip (issue #9).

The open throttle's count, the user's stream lease, the source's epoch, the user's last
positions, the heads of the cursor's partitions and the first replay page of every
partition the stream may replay: ``read_open`` gathers them in one Lua script on Redis
(``realtime.redis_scripts.OPEN``), and with the store's own methods one after another
elsewhere (``gather``: the in-memory store, and the reference the script is tested
against). It only gathers: admission (``realtime.admission``) and the resume rules
(``realtime.replay.resume``) decide what the view means.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from realtime import redis_scripts as scripts
from realtime.store import HotStore, Page, RedisHotStore, StoredEvent, _offset, _partition_key
from streaming.cursor import PartitionKey

OPENS_WINDOW = 60  # seconds: the open throttle counts opens per minute
# Opens per script call: a script holds Redis for its whole run (~0.1 ms per open), so a
# storm's thousand opens go as several calls, not one that stalls every other client.
BATCH = 50


@dataclass(frozen=True, slots=True)
class OpenQuery:
    user_id: int
    # The stream's lease: one open counted and one slot taken (None: neither, e.g.
    # replay_events planning a cursor).
    lease: str | None
    opens_limit: int  # past this many opens in the window: no lease taken, nothing read
    streams_limit: int
    lease_ttl: float
    source: str  # the stream's source: its epoch, and the user's partitions to replay
    # The requested positions (None: no cursor, so no heads and no pages are read).
    cursor: dict[PartitionKey, int] | None
    page_size: int


@dataclass(frozen=True, slots=True)
class OpenView:
    opens: int  # opens of the user in the current window, this one included (0: none counted)
    leased: bool  # False: throttled or no slot free, and nothing below was read
    epoch: str | None = None
    last: dict[PartitionKey, int] = field(default_factory=dict)  # the user's newest, all sources
    heads: dict[PartitionKey, int] = field(default_factory=dict)  # of the cursor's partitions
    # The first page after each cursor position, and from the start of each partition of
    # the source the user has events in that the cursor does not name.
    pages: dict[PartitionKey, Page] = field(default_factory=dict)


async def read_open(store: HotStore, query: OpenQuery) -> OpenView:
    if isinstance(store, RedisHotStore):
        return await _in_one_trip(store, query)
    return await gather(store, query)


async def gather(store: HotStore, query: OpenQuery) -> OpenView:
    """The view from the store's own methods, one after another."""
    opens = 0
    if query.lease is not None:
        opens = await store.count_hit(f"open:{query.user_id}", OPENS_WINDOW)
        if opens > query.opens_limit or not await store.acquire_lease(
            query.user_id, query.lease, query.streams_limit, query.lease_ttl
        ):
            return OpenView(opens, leased=False)
    epoch = await store.epoch(query.source)
    last = await store.last(query.user_id)
    if query.cursor is None:
        return OpenView(opens, True, epoch, last)
    heads = await store.heads(list(query.cursor))
    unnamed = [k for k in last if k[0] == query.source and k not in query.cursor]
    wanted = [*query.cursor.items(), *((key, -1) for key in unnamed)]
    pages = {
        key: await store.read_after(query.user_id, key, after, query.page_size)
        for key, after in wanted
    }
    return OpenView(opens, True, epoch, last, heads, pages)


async def _in_one_trip(store: RedisHotStore, query: OpenQuery) -> OpenView:
    user, cursor = query.user_id, query.cursor
    entries = [str(v) for (source, partition), after in (cursor or {}).items()
               for v in (source, partition, after)]  # fmt: skip
    args = [
        store.p, user, store.hit_key(f"open:{user}", OPENS_WINDOW), 2 * OPENS_WINDOW,
        query.opens_limit, f"{store.p}:lease:{user}", query.lease or "", query.streams_limit,
        query.lease_ttl, time.time(), query.source, query.page_size,
        "0" if cursor is None else "1", *entries,
    ]  # fmt: skip
    reply = await _batch(store).call(args)
    opens = int(reply[0])
    if not reply[1]:
        return OpenView(opens, leased=False)
    epoch = None if reply[2] is None else str(reply[2])
    flat = reply[3]
    last = {_partition_key(m): _offset(i) for m, i in zip(flat[::2], flat[1::2], strict=True)}
    if cursor is None:
        return OpenView(opens, True, epoch, last)
    heads = {k: int(v) for k, v in zip(cursor, reply[4], strict=True) if v is not None}
    pages = {}
    for member, _after, complete, found in reply[5]:
        key = _partition_key(member)
        events = [
            StoredEvent(key[0], key[1], _offset(entry_id), int(_field(fields, "p")),
                        _field(fields, "f"))
            for entry_id, fields in found
        ]  # fmt: skip
        pages[key] = Page(events, complete=bool(complete))
    return OpenView(opens, True, epoch, last, heads, pages)


class _OpenBatch:
    """The opens of one turn of the loop, read in one script call per ``BATCH`` opens.

    A reconnect storm's opens arrive together: one call each made the Redis pool grow to
    its 200 connections, and redis-py's per-command work (a pooled connection, its
    timeouts, the send and the read) was the largest part of an open's Redis cost (#9,
    M5). The script still runs each open as it would alone, one after another.
    """

    def __init__(self, store: RedisHotStore) -> None:
        self.store = store
        self.pending: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self.calls: set[asyncio.Task[None]] = set()  # held: the loop keeps weak references

    async def call(self, args: list[Any]) -> Any:
        """The script's reply for one open's ``args``."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self.pending.append((args, reply))
        if len(self.pending) == 1:
            # After the opens already queued in this turn of the loop have joined in.
            loop.call_soon(self._flush)
        return await reply

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        for start in range(0, len(batch), BATCH):
            task = asyncio.ensure_future(self._send(batch[start : start + BATCH]))
            self.calls.add(task)
            task.add_done_callback(self.calls.discard)

    async def _send(self, batch: list[tuple[list[Any], asyncio.Future[Any]]]) -> None:
        argv = [v for args, _ in batch for v in (len(args), *args)]
        try:
            replies = await scripts.run(self.store.redis, scripts.OPEN, 0, *argv)
        except asyncio.CancelledError:  # the loop is shutting down
            for _, reply in batch:
                reply.cancel()
            raise
        except Exception as exc:  # Redis unreachable: each open answers as it would alone
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
            return
        for (_, reply), value in zip(batch, replies, strict=True):
            if not reply.done():  # its open may have given up (the client left)
                reply.set_result(value)


_batches: weakref.WeakKeyDictionary[RedisHotStore, _OpenBatch] = weakref.WeakKeyDictionary()


def _batch(store: RedisHotStore) -> _OpenBatch:
    """The store's batch (a store is its event loop's: realtime.store.get_store)."""
    batch = _batches.get(store)
    if batch is None:
        batch = _batches[store] = _OpenBatch(store)
    return batch


def _field(fields: list[str], name: str) -> str:
    """A field of a stream entry as a script returns it: a flat [name, value, ...] list."""
    return fields[fields.index(name) + 1]
