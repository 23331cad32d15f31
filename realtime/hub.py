"""The per-process hub: one Channels-layer channel per server process, fanned out in memory.

Per-browser layer channels do not scale and channels-redis drops messages silently when a
channel is over capacity (docs/architecture.md). So each process receives on one channel,
joins a user's group while it has at least one stream for that user, and hands frames to
each stream's bounded buffer. A stream whose buffer overflows is closed, never thinned: the
client reconnects with its last id instead of silently missing events.

A staff stream (``Subscriber`` with no user, docs/events.md "The staff scope") is a
*watcher*: it takes every user's items, so while one is open the process is in every
shard's group. Which groups the process is in follows one rule, ``Hub.wants``; a process
that serves no watcher pays nothing for them but one truthiness test per layer message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from typing import Any

from channels.layers import get_channel_layer

from realtime import lifecycle
from realtime.bus import MESSAGE_TYPE, SHARDS, BusItem, shard_group, shard_of
from realtime.runs import Run, runs_of
from realtime.wakes import Wakes, wakes_of
from streaming import conf, metrics

logger = logging.getLogger(__name__)

# channels-redis forgets group members after `group_expiry` (a day); re-join well before.
GROUP_REFRESH_SECONDS = 3600.0
LAYER_RETRY_SECONDS = 1.0


class Subscriber:
    """One stream's inbox: runs of bus items (realtime.runs) in arrival order, bounded by
    the number of items. The stream itself drops positions it already sent and fills holes
    (realtime.stream), so this stays dumb.

    The writer waits with ``waiter`` and takes with ``take`` (``next_runs`` is the two in
    one). Per wait only its future is made, no coroutine and no new list: what a stream
    holds across a wait is traversed by every young collection made meanwhile (in M1, with
    1,000 streams waiting, each gen-0 collection found ~2,000 such objects; #9). An offer
    wakes the stream a few milliseconds later, with the loop's others (realtime.wakes).
    """

    __slots__ = (
        "_due",
        "_timer",
        "_waiter",
        "_wake_due",
        "_wakes",
        "closed_reason",
        "limit",
        "loop",
        "queued",
        "runs",
        "sending_since",
        "user_id",
        "writer",
    )

    def __init__(self, user_id: int | None, limit: int) -> None:
        # None: a watcher (staff stream), offered every user's items.
        self.user_id = user_id
        self.limit = limit
        # A list and a future per wait, not a deque and an asyncio.Event: each of those
        # holds a deque of its own, 1.4 KiB of an idle stream's footprint (tracemalloc).
        self.runs: list[Run] = []
        self.queued = 0  # items in ``runs``
        self._waiter: asyncio.Future[None] | None = None  # the current (or last) wait's
        self.closed_reason: str | None = None
        # Set by the stream around each write (monotonic time; 0.0 when not writing),
        # so the hub's watchdog can cut a client that stopped reading.
        self.sending_since = 0.0
        self.writer: asyncio.Task[None] | None = None
        # The idle wake-up: one timer per stream, moved only when a wait must end sooner
        # than it fires (``waiter``), not one timer per wait.
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # Looked up at the first wait, then kept: get_running_loop() costs a getpid() call
        # (its fork check), 3 % of a fan-out's samples when done per wait.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wakes: Wakes | None = None  # the loop's, set with it
        self._wake_due = False  # an offer's deferred wake is pending

    def offer(self, runs: list[Run], count: int) -> None:
        """Queue ``runs`` (``count`` items in all), shared with the user's other streams."""
        if self.closed_reason is not None:
            return
        if self.queued + count > self.limit:
            # Never thin a stream: end it, and let the client resume from its last id.
            metrics.STREAM_OVERFLOWS.inc()
            self.close("overflow")
            return
        self.runs.extend(runs)
        self.queued += count
        waiter = self._waiter
        if waiter is not None and not waiter.done() and not self._wake_due:
            assert self._wakes is not None and self.loop is not None  # set by the first wait
            self._wake_due = True
            self._wakes.defer(self, self.loop)

    def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
        self.wake()

    def wake(self) -> None:
        """End the current wait, if any (a wake with no wait is moot: the writer looks at
        what is queued before it waits). A wait that ended otherwise (the writer was
        cancelled) left a done future here: nothing to do."""
        self._wake_due = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake_if_due(self) -> None:
        """An offer's deferred wake: moot if the stream was woken since (closed, timed out)."""
        if self._wake_due:
            self.wake()

    def waiter(self, wait: float) -> asyncio.Future[None] | None:
        """None if there is something to ``take`` (or the stream is closed); else a future
        that ends when there is, or after ``wait`` seconds. A plain method, not a coroutine:
        the writer awaits the future itself, so a wake makes no coroutine object."""
        if self.runs or self.closed_reason is not None:
            return None
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
            self._wakes = wakes_of(loop)
        # Neither wait_for (a task per wake, a quarter of a busy server's CPU) nor a timer
        # per wait (a handle made and cancelled per delivery at low rates,
        # docs/benchmarks.md): the stream's one timer, re-armed only when it fires early.
        self._due = due = loop.time() + wait
        timer = self._timer
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(due, self._time_up)
        self._waiter = waiter = loop.create_future()
        return waiter

    def take(self) -> list[Run]:
        """All the runs queued (maybe none), in order, as a copy: the inbox list is kept."""
        runs = self.runs.copy()
        self.runs.clear()
        self.queued = 0
        return runs

    async def next_runs(self, wait: float) -> list[Run]:
        """Wait up to ``wait`` seconds for items; return all the runs queued (maybe none)."""
        waiter = self.waiter(wait)
        if waiter is not None:
            await waiter
        return self.take()

    async def next_items(self, wait: float) -> list[BusItem]:
        """``next_runs``, item by item."""
        return [item for run in await self.next_runs(wait) for item in run.items]

    def _time_up(self) -> None:
        loop = self.loop
        assert loop is not None  # set by the wait that armed this timer
        # The loop may run a timer up to its clock resolution early: that counts as due.
        if loop.time() + 0.001 >= self._due:
            self._timer = None
            self.wake()
        else:  # the current wait began after this timer was set: it ends later
            self._timer = loop.call_at(self._due, self._time_up)

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Hub:
    """Owns this process's layer channel and the map user → local subscribers."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.by_user: dict[int, set[Subscriber]] = {}
        # Local users per bus shard, and the staff streams that take every user's items.
        self.shard_users: dict[int, set[int]] = {}
        self.watchers: set[Subscriber] = set()
        # The shards whose group this process's channel is in (see ``wants``).
        self.joined: set[int] = set()
        self._membership_locks = [asyncio.Lock() for _ in range(SHARDS)]
        self._receiver: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._started = asyncio.Lock()
        self.draining = False

    async def _ensure_started(self) -> str:
        if self.channel is not None:  # every open but the first: no lock to take
            return self.channel
        async with self._started:
            if self.channel is None:
                self.channel = await self.layer.new_channel(prefix="ts.hub.")
                self._receiver = asyncio.create_task(self._receive_loop(), name="hub-receive")
                self._refresher = asyncio.create_task(self._refresh_loop(), name="hub-refresh")
                self._watchdog = asyncio.create_task(self._watchdog_loop(), name="hub-watchdog")
            return self.channel

    def wants(self, shard: int) -> bool:
        """The membership rule: the process is in a shard's group while it serves a user
        of that shard, or any watcher (which needs every shard)."""
        return bool(self.watchers) or shard in self.shard_users

    async def attach(self, subscriber: Subscriber) -> None:
        channel = await self._ensure_started()
        uid = subscriber.user_id
        if uid is None:
            await self._attach_watcher(subscriber, channel)
            metrics.STREAMS_OPEN.inc()
            return
        shard = shard_of(uid)
        async with self._membership_locks[shard]:
            # Join before registering: from here on every event for uid reaches us.
            await self._join(shard, channel)
            self.shard_users.setdefault(shard, set()).add(uid)
            self.by_user.setdefault(uid, set()).add(subscriber)
        metrics.STREAMS_OPEN.inc()

    async def detach(self, subscriber: Subscriber) -> None:
        subscriber.stop_timer()  # not left holding the stream until it would have fired
        uid = subscriber.user_id
        if uid is None:
            await self._detach_watcher(subscriber)
            return
        shard = shard_of(uid)
        async with self._membership_locks[shard]:
            members = self.by_user.get(uid)
            if members is None or subscriber not in members:
                return
            members.discard(subscriber)
            metrics.STREAMS_OPEN.dec()
            if members:
                return
            del self.by_user[uid]
            users = self.shard_users[shard]
            users.discard(uid)
            if not users:
                del self.shard_users[shard]
            await self._leave_unless_wanted(shard)

    async def _attach_watcher(self, subscriber: Subscriber, channel: str) -> None:
        # Registered first, so that no user's detach leaves a shard meanwhile (``wants`` is
        # now true for all); then every shard is joined.
        self.watchers.add(subscriber)
        try:
            for shard in range(SHARDS):
                async with self._membership_locks[shard]:
                    await self._join(shard, channel)
        except BaseException:
            await self._detach_watcher(subscriber, counted=False)
            raise

    async def _detach_watcher(self, subscriber: Subscriber, *, counted: bool = True) -> None:
        if subscriber not in self.watchers:
            return
        self.watchers.discard(subscriber)
        if counted:
            metrics.STREAMS_OPEN.dec()
        if self.watchers:
            return
        for shard in range(SHARDS):
            async with self._membership_locks[shard]:
                await self._leave_unless_wanted(shard)

    async def _join(self, shard: int, channel: str) -> None:
        """Join ``shard``'s group unless already in it (the caller holds its lock)."""
        if shard not in self.joined:
            await self.layer.group_add(shard_group(shard), channel)
            self.joined.add(shard)

    async def _leave_unless_wanted(self, shard: int) -> None:
        """Leave ``shard``'s group if ``wants`` no longer holds (the caller holds its lock).
        Forgotten locally first: if the layer call fails, the membership lapses."""
        if shard in self.joined and not self.wants(shard):
            self.joined.discard(shard)
            if self.channel is not None:
                await self.layer.group_discard(shard_group(shard), self.channel)

    def deliver(self, message: dict[str, Any]) -> None:
        if message.get("type") != MESSAGE_TYPE:
            logger.warning("hub ignored a layer message of type %r", message.get("type"))
            return
        if self.watchers:
            self._deliver_watched(message["events"])
            return
        for uid, raw_items in message["events"]:
            subscribers = self.by_user.get(uid)
            if not subscribers:
                continue  # another process's user in the same shard
            # Once per process, not per stream: the items, their runs and (on first use)
            # their encoded frames are shared by all of the user's streams.
            runs = runs_of([BusItem.from_wire(raw) for raw in raw_items])
            for subscriber in tuple(subscribers):
                subscriber.offer(runs, len(raw_items))

    def _deliver_watched(self, events: list[tuple[int, list[Any]]]) -> None:
        """``deliver`` while a watcher is open: every user's items also go, in message
        order, to each watcher (one offer per message)."""
        everything: list[Run] = []
        count = 0
        for uid, raw_items in events:
            runs = runs_of([BusItem.from_wire(raw) for raw in raw_items])
            everything.extend(runs)
            count += len(raw_items)
            for subscriber in tuple(self.by_user.get(uid, ())):
                subscriber.offer(runs, len(raw_items))
        for watcher in tuple(self.watchers):
            watcher.offer(everything, count)

    async def _receive_loop(self) -> None:
        assert self.channel is not None
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Events may have been lost while the layer was unreachable: close every
                # stream so its client resumes from its last id instead of missing them.
                logger.exception("hub: channel layer receive failed; closing local streams")
                self.close_all("layer-error")
                await asyncio.sleep(LAYER_RETRY_SECONDS)
                continue
            self.deliver(message)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(GROUP_REFRESH_SECONDS)
            for shard in tuple(self.joined):
                try:
                    await self.layer.group_add(shard_group(shard), self.channel)
                except Exception:
                    logger.exception("hub: could not refresh its membership of shard %s", shard)

    async def _watchdog_loop(self) -> None:
        """Cut streams whose current write has waited longer than the send timeout."""
        while True:
            timeout = conf.get().SEND_TIMEOUT_SECONDS
            await asyncio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for subscriber in self.subscribers():
                since = subscriber.sending_since
                if since and now - since > timeout and subscriber.writer is not None:
                    # Whatever ended the stream before (an overflow, say), it is now stuck
                    # on a client that does not read: that is the reason that counts.
                    subscriber.closed_reason = "slow-client"
                    subscriber.wake()
                    subscriber.writer.cancel()

    def close_all(self, reason: str) -> None:
        for subscriber in self.subscribers():
            subscriber.close(reason)

    def drain(self, window: float) -> None:
        """Refuse new streams and end every open one at a random moment within ``window``
        seconds, so their reconnects spread over the other nodes instead of arriving at
        once."""
        self.draining = True
        lifecycle.draining.set()
        loop = asyncio.get_running_loop()
        for subscriber in self.subscribers():
            loop.call_later(random.uniform(0, window), subscriber.close, "drain")

    def subscribers(self) -> list[Subscriber]:
        return [*(s for members in self.by_user.values() for s in members), *self.watchers]

    async def stop(self) -> None:
        for task in (self._receiver, self._refresher, self._watchdog):
            if task is not None:
                task.cancel()


# One hub per event loop (tests run several loops in one process).
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        layer = get_channel_layer()
        if layer is None:
            raise RuntimeError("CHANNEL_LAYERS has no default layer")
        hub = _hubs[loop] = Hub(layer)
    return hub
