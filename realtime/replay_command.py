"""The logic of ``manage.py replay_events``: select task events in Kafka, then print them
exactly as a stream would send them, re-deliver them to connected streams, or re-apply
them to task state.

Events are read from Kafka by one consumer without a group (``assign`` only), one offset
range at a time, as ``realtime.replay.KafkaReplayer`` does: never a consumer per user.

What is selected (``Selection``):
- ``from_cursor``: everything after a stream cursor, planned by ``realtime.replay.plan_resume``
  against the hot store, like a stream opened with that ``Last-Event-ID``;
- ``partition`` with ``start_offset``/``end_offset``: an inclusive offset range;
- ``since``/``until``: a time range of record timestamps, mapped to offsets with
  ``Consumer.offsets_for_times`` (since: the first offset at or after it; until: exclusive);
- nothing: every partition from its earliest retained offset;
narrowed by ``user_id`` (the record key) and ``task_id``.

Only events ``consume_events`` would push to streams are replayed (``deliverable``): not
poison records, nor events of unknown users or tasks, nor producer retries of an event id
already recorded at another position. ids are built by ``realtime.cursor_frames``, the
stream's own code: the cursor after each event. A ``from_cursor`` replay therefore prints
the same ids and data, in the same order, as the HTTP replay of that cursor; other
selectors start from an empty cursor, like a stream that replays from the earliest event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition
from django.contrib.auth import get_user_model

from realtime import bus, conf
from realtime.adapter import InvalidRecord, adapt
from realtime.cursor import Cursor, CursorError, PartitionKey, parse
from realtime.cursor_frames import frames_after
from realtime.events import EVENT_TYPES, TaskEvent
from realtime.kafka import reader_config, topic_epoch
from realtime.replay import KafkaReplayer, ResumeRefused, plan_resume
from realtime.store import HotStore, StoredEvent, get_store
from tasks.models import AsyncTask, TaskEventLog
from tasks.services import Applied, apply_events

logger = logging.getLogger(__name__)

_QUERY_CHUNK = 1000


class ReplayError(Exception):
    """A selection that cannot be replayed; the message says why."""


@dataclass(frozen=True)
class Selection:
    user_id: int | None = None
    task_id: str | None = None
    from_cursor: str | None = None
    partition: int | None = None
    start_offset: int | None = None
    end_offset: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    source: str | None = None


@dataclass(frozen=True)
class OffsetRange:
    source: str
    partition: int
    first: int
    last: int  # inclusive

    @property
    def key(self) -> PartitionKey:
        return (self.source, self.partition)

    def __str__(self) -> str:
        return f"{self.source}:{self.partition} offsets {self.first}..{self.last}"


@dataclass(frozen=True)
class ReplayItem:
    event: TaskEvent
    cursor: str  # the frame's `id:`: the stream cursor after this event
    prev: int  # the user's previous deliverable offset in the partition (an upper bound)
    frame: str  # the SSE frame, byte for byte what a stream writes

    def data(self) -> str:
        """The frame's data, as EventSource hands it to the page."""
        lines = self.frame.rstrip("\n").split("\n")
        return "\n".join(line[len("data: ") :] for line in lines if line.startswith("data: "))

    def json_line(self) -> str:
        event = EVENT_TYPES[self.event.event_type].sse_event
        return json.dumps({"id": self.cursor, "event": event, "data": self.data()})


@dataclass
class Report:
    items: list[ReplayItem] = field(default_factory=list)
    records: int = 0  # records read in the ranges
    skipped: Counter[str] = field(default_factory=Counter)  # why records were not replayed
    ranges: list[OffsetRange] = field(default_factory=list)
    start: Cursor = field(default_factory=Cursor)  # the cursor before the first event
    events: list[TaskEvent] = field(default_factory=list)  # the valid records read
    epoch: str = ""
    applied: Counter[str] = field(default_factory=Counter)  # --rebuild-state outcomes
    layer_messages: int = 0


class KafkaRangeReader:
    """One Kafka consumer, never in a group, reading offset ranges one after another."""

    def __init__(self, consumer: Any | None = None, *, timeout: float = 30.0) -> None:
        self._consumer = consumer
        self.timeout = timeout

    @property
    def consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = Consumer(reader_config("replay-events"))
        return self._consumer

    def partitions(self, source: str) -> list[int]:
        metadata = self.consumer.list_topics(source, timeout=self.timeout)
        topic = metadata.topics.get(source)
        if topic is None or topic.error is not None or not topic.partitions:
            raise ReplayError(f"topic {source!r} does not exist")
        return sorted(topic.partitions)

    def watermarks(self, source: str, partition: int) -> tuple[int, int]:
        low, high = self.consumer.get_watermark_offsets(
            TopicPartition(source, partition), timeout=self.timeout
        )
        return int(low), int(high)

    def offsets_for_time(
        self, source: str, partitions: list[int], when: datetime
    ) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is at or after ``when``; -1 if none."""
        millis = int(when.timestamp() * 1000)
        found = self.consumer.offsets_for_times(
            [TopicPartition(source, p, millis) for p in partitions], timeout=self.timeout
        )
        return {tp.partition: tp.offset for tp in found}

    def read(self, offsets: OffsetRange) -> list[Message]:
        """The records of ``offsets``, in order (the consumer skips nothing but control
        records, which carry no event)."""
        consumer = self.consumer
        consumer.assign([TopicPartition(offsets.source, offsets.partition, offsets.first)])
        records: list[Message] = []
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                batch = consumer.consume(500, 1.0) or []
                for message in batch:
                    if message.error():
                        logger.warning("kafka error while replaying: %s", message.error())
                        continue
                    offset = message.offset()
                    if offset is None or offset > offsets.last:
                        return records
                    records.append(message)
                    if offset >= offsets.last:
                        return records
                if batch:
                    deadline = time.monotonic() + self.timeout
                    continue
                (position,) = consumer.position([TopicPartition(offsets.source, offsets.partition)])
                if position.offset > offsets.last:
                    return records
                if time.monotonic() > deadline:
                    raise ReplayError(f"timed out reading {offsets} from Kafka")
        finally:
            consumer.unassign()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class _SharedConsumerReplayer(KafkaReplayer):
    """``KafkaReplayer``'s checks (``plan_resume`` asks whether Kafka can serve a range the
    hot store lost), run on the command's one consumer instead of a second one."""

    def __init__(self, reader: KafkaRangeReader) -> None:
        super().__init__()
        self._reader = reader

    def _get_consumer(self) -> Consumer:
        consumer: Consumer = self._reader.consumer
        return consumer

    def shutdown(self) -> None:
        # Not close(): that would close the reader's consumer, which is not ours.
        self._thread.shutdown(wait=True)


def deliverable(events: Sequence[TaskEvent]) -> list[bool]:
    """Whether ``consume_events`` pushes each event to streams (``Outcome.deliver`` of
    ``tasks.services.apply_events``), decided without writing anything: the user and task
    exist and match, and the event id is not recorded at another position (a producer
    retry), nor its position taken by another event id (a rebuilt topic)."""
    logged: dict[str, tuple[str, int, int]] = {}
    taken: dict[tuple[str, int, int], str] = {}
    users: set[int] = set()
    owners: dict[str, int] = {}
    for start in range(0, len(events), _QUERY_CHUNK):
        chunk = events[start : start + _QUERY_CHUNK]
        users |= set(
            get_user_model()
            .objects.filter(pk__in={e.user_id for e in chunk})
            .values_list("pk", flat=True)
        )
        owners.update(
            (str(task_id), owner_id)
            for task_id, owner_id in AsyncTask.objects.filter(
                id__in={e.task_id for e in chunk}
            ).values_list("id", "owner_id")
        )
        for event_id, source, partition, offset in TaskEventLog.objects.filter(
            event_id__in={e.event_id for e in chunk}
        ).values_list("event_id", "source", "partition", "offset"):
            logged.setdefault(str(event_id), (source, partition, offset))
        for source, partition, offset, event_id in TaskEventLog.objects.filter(
            source__in={e.position.source for e in chunk},
            offset__in={e.position.offset for e in chunk},
        ).values_list("source", "partition", "offset", "event_id"):
            taken.setdefault((source, partition, offset), str(event_id))
    result: list[bool] = []
    for event in events:
        pos = (event.position.source, event.position.partition, event.position.offset)
        if event.user_id not in users or owners.get(event.task_id) != event.user_id:
            result.append(False)
            continue
        previous = logged.get(event.event_id)
        if previous is not None:
            result.append(previous == pos)  # a redelivery goes out; a retry does not
            continue
        if taken.get(pos, event.event_id) != event.event_id:
            result.append(False)
            continue
        logged[event.event_id] = pos
        taken[pos] = event.event_id
        result.append(True)
    return result


class EventReplay:
    """Select, then print (``select``), re-deliver (``deliver``) or re-apply (``rebuild``)."""

    def __init__(
        self,
        selection: Selection,
        reader: KafkaRangeReader | None = None,
        *,
        store_factory: Callable[[], HotStore] | None = None,
        layer: Any = None,
        epoch_of: Callable[[str], str] = topic_epoch,
    ) -> None:
        self.selection = selection
        self.reader = reader or KafkaRangeReader()
        self.store_factory = store_factory
        self.layer = layer
        self.epoch_of = epoch_of
        self.source = conf.get().TOPIC_EVENTS
        self._check()

    # --- validation ---------------------------------------------------------------------

    def _check(self) -> None:
        s = self.selection
        if s.source is not None and s.source != self.source:
            raise ReplayError(
                f"source {s.source!r} is not allowed: replay_events reads only {self.source!r} "
                "(TASKSTREAM_TOPIC_EVENTS), the one source streams deliver"
            )
        if s.user_id is not None and not get_user_model().objects.filter(pk=s.user_id).exists():
            raise ReplayError(f"unknown user {s.user_id}")
        if s.task_id is not None:
            try:
                uuid.UUID(s.task_id)
            except ValueError:
                raise ReplayError(f"--task is not a UUID: {s.task_id!r}") from None
        offsets = s.start_offset is not None or s.end_offset is not None
        times = s.since is not None or s.until is not None
        if offsets and s.partition is None:
            raise ReplayError("--start-offset and --end-offset need --partition")
        if offsets and times:
            raise ReplayError("choose offsets (--start-offset/--end-offset) or times, not both")
        if s.from_cursor is not None:
            if s.user_id is None:
                raise ReplayError("--from needs --user: a cursor is one user's stream position")
            if offsets or times or s.partition is not None:
                raise ReplayError("--from cannot be combined with --partition, offsets or times")
        for name, value in (("--start-offset", s.start_offset), ("--end-offset", s.end_offset)):
            if value is not None and value < 0:
                raise ReplayError(f"{name} must be 0 or more")
        if s.partition is not None and s.partition < 0:
            raise ReplayError("--partition must be 0 or more")
        if (
            s.start_offset is not None
            and s.end_offset is not None
            and s.start_offset > s.end_offset
        ):
            raise ReplayError(
                f"empty range: --start-offset {s.start_offset} is after --end-offset {s.end_offset}"
            )
        for name, when in (("--since", s.since), ("--until", s.until)):
            if when is not None and when.tzinfo is None:
                raise ReplayError(f"{name} needs a time zone, e.g. 2026-01-02T03:04:05Z")
        if s.since is not None and s.until is not None and s.since >= s.until:
            raise ReplayError("empty range: --since is not before --until")

    # --- selection ----------------------------------------------------------------------

    def select(self, *, for_delivery: bool = False) -> Report:
        """Read the selected records and build their frames (nothing is written)."""
        report = self.read(for_delivery=for_delivery)
        self.build(report)
        return report

    def read(self, *, for_delivery: bool = False) -> Report:
        """Plan the offset ranges and read the user's valid events in them, in order."""
        s = self.selection
        report = Report(epoch=self.epoch_of(self.source))
        requested: Cursor | None = None
        if s.from_cursor is not None:
            try:
                requested = parse(s.from_cursor)
            except CursorError as exc:
                raise ReplayError(f"--from is not a cursor: {exc}") from None
        start, store_epoch = self._plan(requested, need_store=for_delivery)
        if store_epoch is not None and store_epoch != report.epoch:
            raise ReplayError(
                f"the hot store knows {self.source} as epoch {store_epoch} but Kafka says "
                f"{report.epoch}: consume_events has not run since the topic was re-created"
            )
        if start is None:
            report.start = Cursor(epochs={self.source: report.epoch})
            report.ranges = self._explicit_ranges()
        else:
            report.start = start
            report.ranges = self._ranges_after(start)
        wanted = None if s.user_id is None else str(s.user_id).encode()
        for offsets in report.ranges:
            for message in self.reader.read(offsets):
                report.records += 1
                if wanted is not None and message.key() != wanted:
                    continue
                try:
                    report.events.append(adapt(message))
                except InvalidRecord:
                    report.skipped["poison"] += 1
        return report

    def build(self, report: Report) -> None:
        """Decide which events streams get and build each one's frame, as a stream does."""
        task_id = None if self.selection.task_id is None else str(uuid.UUID(self.selection.task_id))
        epoch = report.start.epochs.get(self.source, report.epoch)
        ok = deliverable(report.events)
        report.items = []
        report.skipped["not delivered by consume_events"] = ok.count(False)
        report.skipped["other task"] = 0
        # One cursor per user, advanced over every event the user's stream would get (the
        # --task filter applies after, so ids stay those of the full stream).
        cursors: dict[int, Cursor] = {}
        prevs: dict[tuple[int, PartitionKey], int] = {}
        firsts = {r.key: r.first for r in report.ranges}
        for event, good in zip(report.events, ok, strict=True):
            if not good:
                continue
            pos = event.position
            key = (pos.source, pos.partition)
            cursor = cursors.setdefault(event.user_id, report.start.copy())
            # The user's event before the range is at or before `first - 1`: an upper
            # bound is safe (a stream behind it fills the hole, one ahead drops nothing).
            prev = prevs.get((event.user_id, key), firsts[key] - 1)
            stored = StoredEvent(pos.source, pos.partition, pos.offset, prev, event.sse_body())
            frames = frames_after(cursor, [stored], epoch)
            if not frames:
                continue
            prevs[(event.user_id, key)] = pos.offset
            if task_id is not None and event.task_id != task_id:
                report.skipped["other task"] += 1
                continue
            report.items.append(ReplayItem(event, str(cursor), prev, frames[0]))

    def _plan(
        self, requested: Cursor | None, *, need_store: bool
    ) -> tuple[Cursor | None, str | None]:
        """The stream's resume plan for ``requested`` (None without --from), and the
        hot store's epoch of the source (None when there is no shared store)."""
        if requested is None and not need_store:
            return None, None
        if self.store_factory is None and not conf.get().REDIS_URL:
            if requested is None:
                return None, None
            raise ReplayError(
                "--from needs REDIS_URL: cursors are planned against the hot store the "
                "streams share"
            )

        async def run() -> tuple[Cursor | None, str | None]:
            store = self.store_factory() if self.store_factory else get_store()
            checker = _SharedConsumerReplayer(self.reader)
            try:
                epoch = await store.epoch(self.source)
                if requested is None:
                    return None, epoch
                assert self.selection.user_id is not None
                try:
                    plan = await plan_resume(store, checker, self.selection.user_id, requested)
                except ResumeRefused as exc:
                    raise ReplayError(f"--from refused ({exc.code}): {exc.detail}") from None
                if plan.reset is not None:
                    raise ReplayError(
                        f"--from cannot be resumed ({plan.reset['reason']}): a stream would "
                        f"send stream-reset and resume from {plan.reset['resumed_from']}"
                    )
                return plan.cursor, epoch
            finally:
                checker.shutdown()
                if self.store_factory is None:
                    await store.close()

        return asyncio.run(run())

    def _ranges_after(self, cursor: Cursor) -> list[OffsetRange]:
        """Everything after ``cursor``, in the order the stream replays its partitions."""
        ranges: list[OffsetRange] = []
        for (source, partition), offset in cursor.offsets.items():
            low, high = self.reader.watermarks(source, partition)
            if offset + 1 < low:
                raise ReplayError(
                    f"--from is expired: {source}:{partition} now starts at offset {low} "
                    f"(retention deleted {offset + 1}..{low - 1})"
                )
            ranges.append(OffsetRange(source, partition, offset + 1, high - 1))
        return [r for r in ranges if r.first <= r.last]

    def _explicit_ranges(self) -> list[OffsetRange]:
        s = self.selection
        partitions = self.reader.partitions(self.source)
        if s.partition is not None:
            if s.partition not in partitions:
                raise ReplayError(
                    f"partition {s.partition} does not exist ({self.source} has "
                    f"{partitions[0]}..{partitions[-1]})"
                )
            partitions = [s.partition]
        bounds = {p: self.reader.watermarks(self.source, p) for p in partitions}
        firsts = {p: low for p, (low, _) in bounds.items()}
        lasts = {p: high - 1 for p, (_, high) in bounds.items()}
        if s.since is not None:
            firsts = self.reader.offsets_for_time(self.source, partitions, s.since)
        if s.until is not None:
            for p, offset in self.reader.offsets_for_time(self.source, partitions, s.until).items():
                if offset >= 0:
                    lasts[p] = offset - 1
        if s.start_offset is not None or s.end_offset is not None:
            assert s.partition is not None
            low, high = bounds[s.partition]
            first = low if s.start_offset is None else s.start_offset
            last = high - 1 if s.end_offset is None else s.end_offset
            if first >= high or last < low:
                raise ReplayError(
                    f"empty range: {self.source}:{s.partition} holds offsets {low}..{high - 1}"
                    if high > low
                    else f"empty range: {self.source}:{s.partition} holds no records"
                )
            firsts[s.partition], lasts[s.partition] = max(first, low), min(last, high - 1)
        ranges = [
            OffsetRange(self.source, p, firsts[p], lasts[p])
            for p in partitions
            if firsts.get(p, -1) >= 0 and firsts[p] <= lasts[p]
        ]
        if not ranges:
            what = "at or after --since" if s.since is not None else "in the selected range"
            raise ReplayError(f"empty range: {self.source} has no records {what}")
        return ranges

    # --- effects ------------------------------------------------------------------------

    def rebuild(self, report: Report, batch: int | None = None) -> Counter[str]:
        """Re-apply the read events (of ``--task`` only, if given) to task state through
        ``apply_events`` (idempotent), then rebuild the frames; return outcome counts."""
        size = batch or conf.get().CONSUMER_BATCH
        task_id = None if self.selection.task_id is None else str(uuid.UUID(self.selection.task_id))
        events = [e for e in report.events if task_id is None or e.task_id == task_id]
        for start in range(0, len(events), size):
            results: list[Applied] = apply_events(events[start : start + size], report.epoch)
            for item in results:
                label = item.outcome.value + (f" ({item.reason})" if item.reason else "")
                report.applied[label] += 1
        self.build(report)
        return report.applied

    def deliver(self, report: Report, batch: int | None = None) -> int:
        """Publish ``report``'s events to their owners' streams; return the layer messages
        sent. A stream writes only positions it has not sent yet."""
        size = batch or conf.get().CONSUMER_BATCH
        items = report.items

        async def run() -> int:
            from channels.layers import get_channel_layer

            layer = self.layer if self.layer is not None else get_channel_layer()
            sent = 0
            try:
                for start in range(0, len(items), size):
                    chunk = items[start : start + size]
                    sent += await bus.publish(
                        layer, [i.event for i in chunk], [i.prev for i in chunk], report.epoch
                    )
            finally:
                if self.layer is None and hasattr(layer, "close_pools"):
                    await layer.close_pools()
            return sent

        report.layer_messages = asyncio.run(run())
        return report.layer_messages

    def close(self) -> None:
        self.reader.close()
