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
from realtime.inbox import Subscriber
from realtime.runs import Run, runs_of
from streaming import conf, metrics

logger = logging.getLogger(__name__)

# channels-redis forgets a group member `group_expiry` seconds after it joined (settings:
# TASKSTREAM_LAYER_GROUP_EXPIRY); a live hub re-joins every quarter of that, so a refresh
# or two may fail without the membership lapsing.
REFRESHES_PER_EXPIRY = 4
LAYER_RETRY_SECONDS = 1.0
# How long a stopping hub waits for each group leave (a frozen Redis must not hold the
# process's exit: the membership then lapses by itself).
LEAVE_TIMEOUT_SECONDS = 2.0
CANCEL_ATTEMPTS = 3
CANCEL_WAIT_SECONDS = 0.5


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
        self._joining: dict[int, asyncio.Future[None]] = {}  # joins under way, by shard
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
        # Join before registering: from here on every event for uid reaches us. Checked
        # after the last await, so no leave comes between the check and the registration
        # (a leave forgets the shard before its own await). The opens that arrive while a
        # join is under way wait on that one join together: on the membership lock they
        # went on one per turn of the loop, a reconnect storm's opens queued behind each
        # other's turns (#9, M5).
        while shard not in self.joined:
            await self._join_shared(shard, channel)
        self.shard_users.setdefault(shard, set()).add(uid)
        self.by_user.setdefault(uid, set()).add(subscriber)
        metrics.STREAMS_OPEN.inc()

    async def _join_shared(self, shard: int, channel: str) -> None:
        """Join ``shard``'s group, or wait for the join already under way (one per shard)."""
        joining = self._joining.get(shard)
        if joining is None or joining.done():
            joining = asyncio.ensure_future(self._join_locked(shard, channel))
            self._joining[shard] = joining
            joining.add_done_callback(_retrieve)
        # Shielded: an open that gives up (its client left) does not cancel the others' join.
        await asyncio.shield(joining)

    async def _join_locked(self, shard: int, channel: str) -> None:
        try:
            async with self._membership_locks[shard]:
                await self._join(shard, channel)
        finally:
            # Forgotten before it is done: an attach that finds the shard left again
            # starts a new join instead of awaiting this finished one in a loop.
            self._joining.pop(shard, None)

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
                # A restarted Redis has also lost the groups: join them again.
                logger.exception("hub: channel layer receive failed; closing local streams")
                self.close_all("layer-error")
                await asyncio.sleep(LAYER_RETRY_SECONDS)
                await self._rejoin()
                continue
            self.deliver(message)
            # The layer takes a backlog in one round trip and hands its messages out without
            # another (realtime.layer): the loop runs between them, so the streams' wakes and
            # writes keep pace with the offers, as when each message cost a round trip.
            await asyncio.sleep(0)

    def _refresh_seconds(self) -> float:
        return float(getattr(self.layer, "group_expiry", 86400)) / REFRESHES_PER_EXPIRY

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds())
            await self._rejoin()

    async def _rejoin(self) -> None:
        """Join every group the process is in again: its membership starts anew."""
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
        """Stop receiving and leave every group (the server's shutdown, realtime/lifespan.py),
        or ``consume_events`` copies every batch into this channel until the membership
        lapses."""
        pending = {t for t in (self._receiver, self._refresher, self._watchdog) if t is not None}
        for _ in range(CANCEL_ATTEMPTS):
            if not pending:
                break
            for task in pending:  # again on each attempt: redis-py may swallow one
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=CANCEL_WAIT_SECONDS)
        if pending:
            logger.warning("hub: %d task(s) ignored their cancellation", len(pending))
        joined, self.joined = sorted(self.joined), set()
        if self.channel is None:
            return
        for shard in joined:
            try:
                await asyncio.wait_for(
                    self.layer.group_discard(shard_group(shard), self.channel),
                    LEAVE_TIMEOUT_SECONDS,
                )
            except Exception:
                logger.warning(
                    "hub: could not leave the group of shard %s; it lapses by itself",
                    shard,
                    exc_info=True,
                )


def _retrieve(joining: asyncio.Future[None]) -> None:
    """A failed join's error is its waiters'; retrieved here in case all of them gave up."""
    if not joining.cancelled():
        joining.exception()


# One hub per event loop (tests run several loops in one process).
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def running_hub() -> Hub | None:
    """The running loop's hub, if a stream has made one."""
    return _hubs.get(asyncio.get_running_loop())


def get_hub() -> Hub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        layer = get_channel_layer()
        if layer is None:
            raise RuntimeError("CHANNEL_LAYERS has no default layer")
        hub = _hubs[loop] = Hub(layer)
    return hub
