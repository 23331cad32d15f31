"""consume_events' pacing (realtime/ingest.py): while records keep coming, one batch per
``linger``; a full batch is followed at once. Fake Kafka edge and state; the loop is real."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from channels.layers import InMemoryChannelLayer

from realtime.ingest import EventConsumer
from realtime.store_memory import MemoryHotStore
from streaming.events import TaskEvent
from tasks.apply import Applied, Outcome
from tests.fakes import FakeConsumer, FakeMessage, FakeProducer, event_value, record


class TimedConsumer(FakeConsumer):
    """Notes when each read that returned records happened."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[float] = []

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        messages = super().consume(num_messages, timeout)
        if messages:
            self.reads.append(time.monotonic())
        return messages


def applied(events: list[TaskEvent], epoch: str) -> list[Applied]:
    return [Applied(event, Outcome.APPLIED, deliver=True) for event in events]


def records(first: int, count: int) -> list[FakeMessage]:
    task = str(uuid.uuid4())
    return [record(event_value(user_id=7, task_id=task), offset=first + i) for i in range(count)]


def make_loop(consumer: TimedConsumer, *, linger: float, batch_size: int) -> EventConsumer:
    return EventConsumer(
        consumer,
        FakeProducer(),
        InMemoryChannelLayer(),
        MemoryHotStore(),
        epoch="E1",
        dlq_topic="task.events.dlq",
        batch_size=batch_size,
        poll_timeout=0.05,
        apply=applied,
        linger=linger,
    )


async def run_until_committed(loop: EventConsumer, consumer: Any, commits: int) -> None:
    running = asyncio.create_task(loop.run())
    deadline = time.monotonic() + 10
    while len(consumer.commits) < commits:
        assert time.monotonic() < deadline, f"{len(consumer.commits)} of {commits} committed"
        await asyncio.sleep(0.01)
    loop.request_stop()
    await asyncio.wait_for(running, 10)


async def test_records_that_keep_coming_are_read_once_per_linger() -> None:
    consumer = TimedConsumer()
    consumer.batches += [records(0, 2), records(2, 2), records(4, 1)]
    loop = make_loop(consumer, linger=0.3, batch_size=10)
    await run_until_committed(loop, consumer, 3)
    first, second, third = consumer.reads
    # Without pacing the three reads come within milliseconds of each other.
    assert second - first >= 0.3
    assert third - second >= 0.3
    assert [c[0][2] for c in consumer.commits] == [2, 4, 5]


async def test_a_full_batch_is_followed_at_once() -> None:
    """A backlog drains at full speed: after a full batch there is no pause (the linger
    here is far longer than the deadline)."""
    consumer = TimedConsumer()
    consumer.batches += [records(0, 3), records(3, 3), records(6, 1)]
    loop = make_loop(consumer, linger=60, batch_size=3)
    await run_until_committed(loop, consumer, 3)
    assert [c[0][2] for c in consumer.commits] == [3, 6, 7]


async def test_a_record_after_a_quiet_spell_is_read_at_once() -> None:
    """Empty reads are quiet: they do not restart the linger. Here a record arrives just
    after a waiting read came back empty a linger after the last records: had that read counted,
    the record would wait a whole linger."""
    linger = 1.0
    arrived: list[float] = []

    class QuietThenOne(TimedConsumer):
        def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
            messages = super().consume(num_messages, timeout)
            quiet = bool(self.reads) and time.monotonic() > self.reads[0] + linger
            if not messages and timeout > 0 and quiet and not arrived:
                self.batches.append(records(1, 1))
                arrived.append(time.monotonic())
            return messages

    consumer = QuietThenOne()
    consumer.batches.append(records(0, 1))
    loop = make_loop(consumer, linger=linger, batch_size=10)
    await run_until_committed(loop, consumer, 2)
    assert len(consumer.reads) == 2
    assert consumer.reads[1] - arrived[0] < linger
