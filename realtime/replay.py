"""Replay: where a (re)connecting stream starts, and how holes are filled.

The hot store answers almost every reconnect. When it cannot prove it holds everything
after a cursor (trimmed, expired), Kafka is read instead, by one shared consumer per
process (``KafkaReplayer``): a thousand clients reconnecting at once queue on it; they
never make a thousand consumers. A cursor that no source can serve is answered with an
explicit reset, never silently (docs/events.md, "Resuming").
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from realtime import conf, metrics
from realtime.adapter import InvalidRecord, adapt
from realtime.cursor import Cursor, PartitionKey
from realtime.kafka import reader_config
from realtime.store import UNKNOWN_PREV, HotStore, StoredEvent

logger = logging.getLogger(__name__)


class ResumeRefused(Exception):
    """A cursor the server answers with an HTTP error before any stream bytes."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass
class ResumePlan:
    cursor: Cursor  # deliver everything after these positions
    resumed_from: str  # for the response header: a cursor, "earliest" or "head"
    reset: dict[str, str] | None = (
        None  # the stream-reset payload, when the request was not honoured
    )
    from_earliest: bool = False  # replay whatever the store holds, even if incomplete


class Unfillable(Exception):
    """Neither the hot store nor Kafka holds what is missing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def plan_resume(
    store: HotStore, kafka: KafkaReplayer, user_id: int, requested: Cursor | None
) -> ResumePlan:
    settings = conf.get()
    source = settings.TOPIC_EVENTS
    # Only the stream's own source: the store may remember others (a renamed topic).
    last = {k: v for k, v in (await store.last(user_id)).items() if k[0] == source}
    head_cursor = Cursor()
    epoch = await store.epoch(source)
    for key, offset in last.items():
        head_cursor.advance(key[0], key[1], offset, epoch or "unknown")
    if requested is None:
        return ResumePlan(head_cursor, str(head_cursor) or "head")

    foreign = [s for s in requested.epochs if s != source]
    if foreign:
        raise ResumeRefused(403, "source_forbidden", f"this stream cannot read {foreign[0]!r}")
    if epoch is not None and requested.epochs.get(source, epoch) != epoch:
        return _reset("epoch-changed", requested, epoch)
    heads = await store.heads(list(requested.offsets))
    for key, offset in requested.offsets.items():
        if offset > heads.get(key, -1):
            # The cursor names records nobody has consumed: not from this topic, or forged.
            plan = ResumePlan(head_cursor, str(head_cursor) or "head")
            plan.reset = {
                "reason": "cursor-ahead",
                "requested": str(requested),
                "resumed_from": plan.resumed_from,
            }
            return plan
    for key, offset in requested.offsets.items():
        page = await store.read_after(user_id, key, offset, 1)
        if not page.complete:
            # The store lost part of the range: Kafka must serve it, if it still can.
            until = page.events[0].offset if page.events else None
            problem = await kafka.check(key, offset, until)
            if problem is not None:
                return _reset(problem, requested, epoch or requested.epochs[source])
    cursor = requested.copy()
    # Partitions the client has never received from start at their current end.
    for key, offset in last.items():
        if key not in cursor.offsets:
            cursor.advance(key[0], key[1], offset, epoch or "unknown")
    return ResumePlan(cursor, str(requested))


def _reset(reason: str, requested: Cursor, epoch: str) -> ResumePlan:
    plan = ResumePlan(
        Cursor(epochs={conf.get().TOPIC_EVENTS: epoch}), "earliest", from_earliest=True
    )
    plan.reset = {"reason": reason, "requested": str(requested), "resumed_from": "earliest"}
    return plan


async def backfill(
    store: HotStore,
    kafka: KafkaReplayer,
    user_id: int,
    key: PartitionKey,
    after: int,
    before: int | None = None,
    *,
    accept_incomplete: bool = False,
) -> list[StoredEvent]:
    """The user's events in ``key`` with ``after < offset < before``, in order.

    Raises ``Unfillable`` when the hot store is incomplete there and Kafka no longer has
    (or may not scan) the range.
    """
    page_size = conf.get().REPLAY_PAGE
    page = await store.read_after(user_id, key, after, page_size)
    events: list[StoredEvent] = []
    if not page.complete and not accept_incomplete:
        until = page.events[0].offset if page.events else before
        events.extend(await kafka.read(user_id, key, after, until))
        metrics.REPLAYS.labels("kafka").inc()
    else:
        metrics.REPLAYS.labels("store").inc()
    while True:
        fresh = [e for e in page.events if before is None or e.offset < before]
        events.extend(e for e in fresh if not events or e.offset > events[-1].offset)
        if len(page.events) < page_size or (before is not None and len(fresh) < len(page.events)):
            return events
        page = await store.read_after(user_id, key, page.events[-1].offset, page_size)


class KafkaReplayer:
    """One Kafka consumer per process, without a group, reading ranges on request."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-replay")
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()

    async def read(
        self, user_id: int, key: PartitionKey, after: int, before: int | None
    ) -> list[StoredEvent]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._read, user_id, key, after, before)

    async def check(self, key: PartitionKey, after: int, before: int | None) -> str | None:
        """Why Kafka cannot serve ``after < offset < before`` (a reset reason), or None."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._range, key, after, before)
        except Unfillable as exc:
            return exc.reason
        return None

    def _range(self, key: PartitionKey, after: int, before: int | None) -> int:
        """The end (exclusive) of the readable range, or Unfillable."""
        consumer = self._get_consumer()
        low, high = consumer.get_watermark_offsets(TopicPartition(*key), timeout=10)
        end = high if before is None else min(before, high)
        if after + 1 < low:
            raise Unfillable("cursor-expired")  # retention deleted part of the range
        if end - (after + 1) > conf.get().REPLAY_MAX_SCAN:
            raise Unfillable("replay-limit")
        return end

    def _read(
        self, user_id: int, key: PartitionKey, after: int, before: int | None
    ) -> list[StoredEvent]:
        consumer = self._get_consumer()
        source, partition = key
        end = self._range(key, after, before)
        if end <= after + 1:
            return []
        consumer.assign([TopicPartition(source, partition, after + 1)])
        wanted = str(user_id).encode()
        events: list[StoredEvent] = []
        try:
            while True:
                for message in consumer.consume(500, 5.0) or []:
                    if message.error():
                        continue
                    offset = message.offset()
                    assert offset is not None
                    if offset >= end:
                        return events
                    if message.key() == wanted:
                        try:
                            event = adapt(message)
                        except InvalidRecord:
                            continue  # it went to the dead-letter topic, not to streams
                        events.append(
                            StoredEvent(source, partition, offset, UNKNOWN_PREV, event.sse_body())
                        )
                    if offset >= end - 1:
                        return events
        finally:
            consumer.unassign()

    def _get_consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(reader_config("replay"))
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        self._thread.shutdown(wait=False)


_replayer: KafkaReplayer | None = None
_replayer_lock = threading.Lock()


def get_kafka_replayer() -> KafkaReplayer:
    global _replayer
    with _replayer_lock:
        if _replayer is None:
            _replayer = KafkaReplayer()
        return _replayer
