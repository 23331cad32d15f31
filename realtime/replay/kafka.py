"""The process's one Kafka reader for streams: ranges the hot store no longer holds, and
where a time falls in each partition (a stream's ``?since=``).

A thousand clients reconnecting at once queue on it; they never make a thousand
consumers. It delivers exactly what the live path delivered (``tasks.delivery``): a
record ``consume_events`` rejected or dead-lettered is never replayed.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import NamedTuple

from channels.db import database_sync_to_async
from confluent_kafka import KafkaException

from realtime.replay.selection import first_offsets_at
from realtime.store import UNKNOWN_PREV, StoredEvent
from streaming import conf
from streaming.adapter import InvalidRecord, adapt
from streaming.cursor import PartitionKey
from streaming.events import TaskEvent
from streaming.kafka import RangeError, RangeReader
from tasks.delivery import deliverable


class Unfillable(Exception):
    """Neither the hot store nor Kafka holds what is missing; ``reason`` is the
    ``stream-reset`` reason (or why Kafka failed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PartitionBounds(NamedTuple):
    first: int  # the first offset at or after a time, -1 if none yet
    low: int  # the earliest offset retention kept
    high: int  # the offset the next record will get


class KafkaReplayer:
    """Reads one user's events of a partition range, on its own thread."""

    def __init__(self, reader: RangeReader | None = None) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-replay")
        self._reader = reader or RangeReader("replay")
        self._owns_reader = reader is None

    async def read(
        self, user_id: int, key: PartitionKey, after: int, before: int | None, epoch: str | None
    ) -> list[StoredEvent]:
        """The user's delivered events with ``after < offset < before`` (``before`` None:
        up to the partition's end), in order; ``Unfillable`` when Kafka cannot serve it.
        ``epoch``: the topic's as the hot store knows it (``consume_events`` applied and
        logged the topic's records in it; None: not known)."""
        loop = asyncio.get_running_loop()
        events = await loop.run_in_executor(self._thread, self._read, user_id, key, after, before)
        if not events:
            return []
        delivered = await database_sync_to_async(deliverable)(events, epoch)
        return [
            StoredEvent(*key, e.position.offset, UNKNOWN_PREV, e.sse_body())
            for e, ok in zip(events, delivered, strict=True)
            if ok
        ]

    async def check(self, key: PartitionKey, after: int, before: int | None) -> str | None:
        """Why Kafka cannot serve ``after < offset < before`` (a reset reason), or None."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._range, key, after, before)
        except Unfillable as exc:
            return exc.reason
        return None

    async def offsets_at(self, source: str, when: datetime) -> dict[int, PartitionBounds]:
        """Per partition of ``source``: the first offset at or after ``when`` (-1: none
        yet) and the watermarks; ``Unfillable`` when Kafka does not answer."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._offsets_at, source, when)

    def _offsets_at(self, source: str, when: datetime) -> dict[int, PartitionBounds]:
        try:
            partitions = self._reader.partitions(source)
            firsts = first_offsets_at(self._reader, source, partitions, when)
            return {
                p: PartitionBounds(firsts.get(p, -1), *self._reader.watermarks(source, p))
                for p in partitions
            }
        except (RangeError, KafkaException) as exc:
            raise Unfillable(f"kafka-unavailable: {exc}") from None

    def _range(self, key: PartitionKey, after: int, before: int | None) -> int:
        """The end (exclusive) of the readable range, or Unfillable."""
        low, high = self._reader.watermarks(*key)
        end = high if before is None else min(before, high)
        if after + 1 < low:
            raise Unfillable("cursor-expired")  # retention deleted part of the range
        if end - (after + 1) > conf.get().REPLAY_MAX_SCAN:
            raise Unfillable("replay-limit")
        return end

    def _read(
        self, user_id: int, key: PartitionKey, after: int, before: int | None
    ) -> list[TaskEvent]:
        end = self._range(key, after, before)
        wanted = str(user_id).encode()
        try:
            records = self._reader.read(*key, after + 1, end - 1, lambda m: m.key() == wanted)
        except RangeError as exc:
            raise Unfillable(f"kafka-unavailable: {exc}") from None
        events: list[TaskEvent] = []
        for record in records:
            try:
                events.append(adapt(record))
            except InvalidRecord:
                continue  # it went to the dead-letter topic, not to streams
        return events

    def close(self) -> None:
        """Stop the thread; close the reader if this replayer made it (a reader passed in
        belongs to its maker)."""
        self._thread.shutdown(wait=True)
        if self._owns_reader:
            self._reader.close()


_replayer: KafkaReplayer | None = None
_replayer_lock = threading.Lock()


def get_kafka_replayer() -> KafkaReplayer:
    global _replayer
    with _replayer_lock:
        if _replayer is None:
            _replayer = KafkaReplayer()
        return _replayer
