"""The logic of ``manage.py replay_events``: read the selected task events from Kafka
(``realtime.replay.selection``), then print them exactly as a stream would send them,
re-deliver them to connected streams, or re-apply them to task state.

Events are read by one ``streaming.kafka.RangeReader`` (``assign`` only, never a group),
one offset range at a time: never a consumer per user. Only events the live path
delivered are replayed (``tasks.delivery``): not poison records, nor events of unknown
users or tasks, nor producer retries of an event id already recorded at another position,
nor records ``consume_events`` has not processed yet. ids are built by
``realtime.frames``, the stream's own code: the cursor after each event. A ``from_cursor``
replay therefore prints the same ids and data, in the same order, as the HTTP replay of
that cursor; other selectors start from an empty cursor, like a stream that replays from
the earliest event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from realtime import bus
from realtime.frames import frames_after
from realtime.replay.kafka import KafkaReplayer
from realtime.replay.resume import ResumeRefused, plan_resume
from realtime.replay.selection import (
    OffsetRange,
    ReplayError,
    Selection,
    check,
    explicit_ranges,
    ranges_after,
)
from realtime.store import HotStore, StoredEvent, get_store
from streaming import conf
from streaming.adapter import InvalidRecord, adapt
from streaming.cursor import Cursor, CursorError, PartitionKey, parse
from streaming.events import EVENT_TYPES, TaskEvent
from streaming.kafka import RangeError, RangeReader, topic_epoch
from tasks.apply import Applied, apply_events
from tasks.delivery import deliverable

logger = logging.getLogger(__name__)


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


class EventReplay:
    """Select, then print (``select``), re-deliver (``deliver``) or re-apply (``rebuild``)."""

    def __init__(
        self,
        selection: Selection,
        reader: RangeReader | None = None,
        *,
        store_factory: Callable[[], HotStore] | None = None,
        layer: Any = None,
        epoch_of: Callable[[str], str] = topic_epoch,
    ) -> None:
        self.selection = selection
        self.reader = reader or RangeReader("replay-events")
        self.store_factory = store_factory
        self.layer = layer
        self.epoch_of = epoch_of
        self.source = conf.get().TOPIC_EVENTS
        check(selection, self.source)

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
            report.ranges = explicit_ranges(self.reader, s, self.source)
        else:
            report.start = start
            report.ranges = ranges_after(self.reader, start)
        wanted = None if s.user_id is None else str(s.user_id).encode()
        for offsets in report.ranges:
            try:
                records = self.reader.read(
                    offsets.source, offsets.partition, offsets.first, offsets.last
                )
            except RangeError as exc:
                raise ReplayError(str(exc)) from None
            for message in records:
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
        ok = deliverable(report.events, report.epoch)
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
            checker = KafkaReplayer(self.reader)
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
                checker.close()
                if self.store_factory is None:
                    await store.close()

        return asyncio.run(run())

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
