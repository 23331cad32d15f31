"""The stream's writer: what goes out on an open stream, and how.

``EventStreamConsumer`` (realtime.stream) opens the stream (credentials, lease, hub, the
resume plan) and then runs ``_write_loop`` as its writer task; the staff scope
(realtime.staff) overrides ``_replay``, ``_deliver`` and ``_heartbeat``.

Delivery: replay what the plan says, then go live. Every write of event frames goes
through ``_deliver``, which drops positions already sent and fills any hole first: the
replay/live seam has no gap and no duplicate, whatever order things arrive in. Per wake
the writer takes everything queued and writes it at once; a run of events the stream's
cursor can take whole goes out as bytes encoded once per process (realtime.runs), so the
common fan-out case does no per-stream, per-event work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import structlog

from realtime.auth import StreamUser
from realtime.bus import BusItem
from realtime.frames import frames_after, next_frame, replayed, takes_whole
from realtime.heads import shared_heads
from realtime.inbox import Subscriber
from realtime.replay.kafka import KafkaReplayer, Unfillable
from realtime.replay.resume import ResumePlan, backfill
from realtime.runs import Run
from realtime.store import UNKNOWN_PREV, HotStore
from streaming import conf, metrics
from streaming.cursor import UNKNOWN_EPOCH, Cursor, PartitionKey
from streaming.events import encode_sse

# The stream's lines keep the stream's logger name (docs/operations.md lists them by it).
logger = logging.getLogger("realtime.stream")
log = structlog.get_logger("realtime.stream")


class _SentCount:
    """``STREAM_FRAMES_SENT``, added to once per turn of the loop rather than once per
    write: a fan-out's writes to a user's streams all happen in one turn, and each
    ``Counter.inc`` (a lock and two checks) was ~2.5 % of its samples. The count reaches the
    counter when the turn ends (a flush queued behind the turn's writes)."""

    def __init__(self) -> None:
        self.pending = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, count: int, loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is None or (self.pending and loop is not self.loop):
            # Not known yet (a replay before the stream's first wait), or another loop
            # (tests run several): counted at once, with anything pending.
            metrics.STREAM_FRAMES_SENT.inc(count + self.pending)
            self.pending = 0
            return
        if not self.pending:
            self.loop = loop
            loop.call_soon(self.flush)
        self.pending += count

    def flush(self) -> None:
        count, self.pending = self.pending, 0
        if count:
            metrics.STREAM_FRAMES_SENT.inc(count)


sent_count = _SentCount()


class StreamWriter:
    """The writer half of the stream consumer (a mixin: the consumer supplies the state
    below and ``send_body``)."""

    user: StreamUser
    subscriber: Subscriber
    store: HotStore
    kafka: KafkaReplayer
    plan: ResumePlan
    lease: str
    cursor: Cursor
    sent = heartbeats = 0  # counted for the stream's close line

    if TYPE_CHECKING:  # the consumer's (the server's send); declared for the type checker
        base_send: Callable[[dict[str, Any]], Awaitable[None]]

    async def _write_loop(self) -> None:
        settings = conf.get()
        # The plan's own cursor, not a copy: every plan makes a new one, and nothing reads
        # it once the writer runs. A copy was a second ``Cursor`` and two dicts (~0.4 KiB)
        # for each stream's whole life (issue #9, M4).
        self.cursor = self.plan.cursor
        opened = time.monotonic()
        lifetime = settings.STREAM_MAX_SECONDS * random.uniform(0.8, 1.0)
        deadline = min(self.user.expires_at, time.time() + lifetime)
        reason = "lifetime"
        subscriber = self.subscriber
        try:
            await self._replay()
            while True:
                now = time.time()
                if now >= deadline:
                    reason = "token-expired" if now >= self.user.expires_at else "lifetime"
                    break
                # The subscriber's waiter and take, not its next_runs: a coroutine made per
                # wake would live across the wait, like everything a wait holds (hub.py).
                waiter = subscriber.waiter(min(settings.HEARTBEAT_SECONDS, deadline - now))
                if waiter is not None:
                    await waiter
                runs = subscriber.take()
                if time.time() >= self.user.expires_at:
                    reason = "token-expired"  # nothing that arrives after expiry goes out
                    break
                if runs:
                    await self._deliver(runs)
                if subscriber.closed_reason is not None:
                    reason = subscriber.closed_reason
                    break
                if not runs:
                    await self._heartbeat()
            # A clean end of the 200 response makes EventSource reconnect with its
            # Last-Event-ID after the `retry:` delay.
            await self._send(encode_sse(retry_ms=settings.RETRY_MS).encode(), final=True)
        except asyncio.CancelledError:
            # The hub's watchdog cancels a writer stuck in a write (the client stopped
            # reading): the response is abandoned, the server drops the connection, and
            # the client resumes from its last id. Otherwise the client went away.
            stuck = self.subscriber.closed_reason == "slow-client"
            reason = "slow-client" if stuck else "client-gone"
            if not stuck:
                raise
        except Unfillable as exc:
            reason = f"unfillable-{exc.reason}"
            await self._end_quietly()
        except Exception:
            reason = "error"
            logger.exception("stream of user %s failed", self.user.user_id)
            await self._end_quietly()
        finally:
            metrics.STREAMS_CLOSED.labels(reason).inc()
            log.info(
                "stream closed",
                reason=reason,
                events=self.sent,
                heartbeats=self.heartbeats,
                seconds=round(time.monotonic() - opened, 1),
            )

    async def _replay(self) -> None:
        keys = [*self.cursor.offsets, *self.plan.from_start]
        if self.plan.from_earliest:
            source = conf.get().TOPIC_EVENTS
            keys = [k for k in await self.store.last(self.user.user_id) if k[0] == source]
        for key in keys:
            events = await backfill(
                self.store,
                self.kafka,
                self.user.user_id,
                key,
                self.cursor.offsets.get(key, -1),
                accept_incomplete=self.plan.from_earliest,
                charge=False,  # plan_resume counted this open's Kafka replay
                first=self.plan.pages.pop(key, None),  # read with the open's other reads
            )
            await self._deliver(replayed(events, self.cursor.epochs.get(key[0])))

    async def _deliver(self, runs: Iterable[Run]) -> None:
        """The one path by which event frames reach the client, live or replayed.

        A run the cursor can take whole is written as the frames every stream shares
        (``takes_whole``); otherwise item by item: drops a position already sent, fills the
        hole an item's ``prev`` reveals before writing the item, advances the cursor per
        frame. Whatever the wake brought is written at once.
        """
        chunks: list[bytes] = []
        count = 0
        for run in runs:
            if takes_whole(self.cursor, run):
                chunks.append(run.data)
                count += len(run)
                continue
            written, complete = await self._deliver_items(run.items, chunks)
            count += written
            if not complete:
                break
        if chunks:
            # One chunk (the usual wake): join returns it as it is, no copy.
            await self._send(b"".join(chunks))
            sent_count.add(count, self.subscriber.loop)
            self.sent += count

    async def _deliver_items(
        self, items: Iterable[BusItem], chunks: list[bytes]
    ) -> tuple[int, bool]:
        """``_deliver`` for items the cursor cannot take as a whole run: appends their
        frames to ``chunks``; returns how many, and False if the stream must stop here."""
        count = 0
        for item in items:
            key = (item.source, item.partition)
            if self.cursor.epochs.get(item.source) not in (None, item.epoch, UNKNOWN_EPOCH):
                self.subscriber.close("epoch-changed")
                return count, False
            sent = self.cursor.offsets.get(key)
            if sent is None:
                # Never sent from here: a ``?since=`` stream still skips what is before it.
                sent = self.plan.floor.get(key, -1)
            if item.offset <= sent:
                metrics.STREAM_DUPLICATES_DROPPED.inc()
                continue
            if item.prev != UNKNOWN_PREV and item.prev > sent:
                # The layer lost something between what we sent and this event.
                metrics.STREAM_GAPS_FILLED.inc()
                missing = await backfill(
                    self.store, self.kafka, self.user.user_id, key, sent, item.offset
                )
                filled = frames_after(self.cursor, missing, item.epoch)
                chunks.extend(frame.encode() for frame in filled)
                count += len(filled)
            chunks.append(next_frame(self.cursor, item).encode())
            count += 1
        return count, True

    async def _heartbeat(self) -> None:
        """A named event page JavaScript can see, preceded, when the user's partitions
        moved on without them, by an id-only frame that advances the client's cursor, so
        a reconnect does not rescan other users' records."""
        keys: list[PartitionKey] = list(self.cursor.offsets)
        heads = await shared_heads(self.store).get(keys)  # one read for the process's streams
        advanced = False
        for key, head in heads.items():
            sent = self.cursor.offsets.get(key, -1)
            if head > sent:
                # Anything of ours up to the head goes out first, then the id moves on.
                epoch = self.cursor.epochs.get(key[0], UNKNOWN_EPOCH)
                missing = await backfill(
                    self.store, self.kafka, self.user.user_id, key, sent, head + 1
                )
                await self._deliver(replayed(missing, epoch))
                self.cursor.advance(key[0], key[1], head, epoch)
                advanced = True
        frame = f"id: {self.cursor}\n\n" if advanced else ""
        frame += encode_sse(event="heartbeat", data=json.dumps({"t": int(time.time())}))
        await self._send(frame.encode())
        metrics.STREAM_HEARTBEATS.inc()
        self.heartbeats += 1

    async def _send(self, data: bytes, *, final: bool = False) -> None:
        # Watched by the hub (one timer per process, not one per write): a write still
        # pending after TASKSTREAM_SEND_TIMEOUT_SECONDS cancels this writer.
        subscriber = self.subscriber
        subscriber.sending_since = time.monotonic()
        try:
            # The message AsyncHttpConsumer.send_body would make, handed to the server's
            # send (the consumer's ``base_send``) without its two coroutine layers (send_body,
            # AsyncConsumer.send): ~3 % of a fan-out's samples, per stream per wake. Neither
            # stream consumer overrides ``send``; test_stream_writes checks that.
            await self.base_send(
                {"type": "http.response.body", "body": data, "more_body": not final}
            )
        finally:
            subscriber.sending_since = 0.0

    async def _end_quietly(self) -> None:
        with contextlib.suppress(Exception):  # the client may be gone already
            await self._send(b"", final=True)
