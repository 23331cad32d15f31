"""The consume_events loop, one batch at a time: fake Kafka edge, real DB and layer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis.exceptions
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer
from confluent_kafka import KafkaError, TopicPartition
from django.contrib.auth.models import User
from django.db import connections

from realtime import bus
from realtime import ingest_kafka as kafka_side
from realtime.hub import Hub
from realtime.inbox import Subscriber
from realtime.ingest import EventConsumer
from realtime.store_memory import MemoryHotStore
from streaming import metrics
from tasks.apply import apply_events
from tasks.models import AsyncTask, TaskStatus
from tests import hostile
from tests.fakes import FakeConsumer, FakeProducer, event_value, record

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def close_thread_connections() -> AsyncIterator[None]:
    yield
    # database_sync_to_async runs in a worker thread whose connection outlives the test;
    # left open, it blocks dropping the test database at the end of the session.
    await database_sync_to_async(connections.close_all)()


class RecordingLayer(InMemoryChannelLayer):  # type: ignore[misc]
    """The real in-memory layer, noting when a send happens relative to commits."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.log.append(f"send {group}")
        await super().group_send(group, message)


async def wait_until(condition: Callable[[], bool], deadline: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, "condition not met before the deadline"
        await asyncio.sleep(0.01)


def make_loop(
    consumer: FakeConsumer,
    producer: FakeProducer,
    layer: Any = None,
    store: Any = None,
    apply: Callable[..., Any] = apply_events,
    poll_timeout: float = 0.2,
) -> EventConsumer:
    return EventConsumer(
        consumer,
        producer,
        layer or InMemoryChannelLayer(),
        store or MemoryHotStore(),
        epoch="E1",
        dlq_topic="task.events.dlq",
        poll_timeout=poll_timeout,
        apply=apply,
    )


def create_task(user: User) -> AsyncTask:
    return AsyncTask.objects.create(owner=user, kind="demo")


async def test_a_batch_is_applied_pushed_dead_lettered_then_committed(alice: User) -> None:
    task = await database_sync_to_async(create_task)(alice)
    log: list[str] = []
    layer = RecordingLayer(log)
    hub = Hub(layer)
    subscriber = Subscriber(alice.pk, limit=100)
    await hub.attach(subscriber)

    good = event_value(user_id=alice.pk, task_id=str(task.id), event_type="task.started", data={})
    ghost = event_value(user_id=987654, task_id=str(task.id))
    later = event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": 50})
    consumer = FakeConsumer(log=log)
    consumer.batches.append(
        [
            record(good, offset=10, partition=1),
            record(b"{broken", offset=11, partition=1, key=b"1"),
            record(ghost, offset=12, partition=1),
            record(later, offset=13, partition=1),
        ]
    )
    dlq = FakeProducer(log=log)
    store = MemoryHotStore()
    loop = make_loop(consumer, dlq, layer, store)

    result = await loop.run_once()

    assert result.records == 4
    assert result.delivered == 2
    assert result.dead_lettered == 2
    reasons = [dict(p["headers"])["reason"].decode() for p in dlq.produced]
    assert reasons[0].startswith("not valid JSON")
    assert reasons[1] == "unknown user"
    assert all(p["topic"] == "task.events.dlq" for p in dlq.produced)
    assert dict(dlq.produced[0]["headers"])["offset"] == b"11"
    # The dead letters are acknowledged and the push is done before the offsets commit.
    assert log == ["flush", f"send {bus.user_group(alice.pk)}", "commit"]
    assert consumer.commits == [[("task.events", 1, 14)]]
    # The hub's own receive loop hands the layer message to the subscriber.
    items = await subscriber.next_items(1)
    assert [(i[2], i[3], i[4]) for i in items] == [(10, -1, "E1"), (13, 10, "E1")]
    # Stored for replay before the push; heads record everything consumed.
    assert [
        e.offset for e in (await store.read_after(alice.pk, ("task.events", 1), -1, 10)).events
    ] == [10, 13]
    assert await store.heads([("task.events", 1)]) == {("task.events", 1): 13}

    task = await database_sync_to_async(AsyncTask.objects.get)(id=task.id)
    assert task.status == TaskStatus.RUNNING
    assert task.progress == 50
    await hub.stop()


def test_a_commit_the_broker_refuses_is_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The commit is asynchronous: the broker's answer comes to the consumer's on_commit.
    before = metrics.CONSUMER_COMMIT_FAILURES._value.get()
    fine = TopicPartition("task.events", 0, 15)
    kafka_side.committed(None, [fine])
    assert metrics.CONSUMER_COMMIT_FAILURES._value.get() == before
    # librdkafka sets a partition's error; Python cannot, so a stand-in carries one.
    error = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
    moved = cast(TopicPartition, SimpleNamespace(topic="task.events", partition=1, error=error))
    with caplog.at_level("WARNING", logger="realtime.ingest"):
        kafka_side.committed(None, [fine, moved])
    assert metrics.CONSUMER_COMMIT_FAILURES._value.get() == before + 1
    assert "commit failed (task.events:1)" in caplog.text


async def test_an_unacknowledged_dead_letter_rewinds_the_batch_and_commits_nothing(
    alice: User,
) -> None:
    consumer = FakeConsumer()
    consumer.batches.append([record(b"not json", offset=3, key=b"1")])
    dlq = FakeProducer(unacked_on_flush=1)
    loop = make_loop(consumer, dlq)
    result = await loop.run_once()
    # An outage of the dead-letter topic, not a bad batch: read it again later.
    assert result.retried
    assert consumer.commits == []
    assert consumer.seeks == [("task.events", 0, 3)]
    assert loop.outages_in_a_row == 1


async def test_an_empty_poll_commits_nothing() -> None:
    consumer = FakeConsumer()
    loop = make_loop(consumer, FakeProducer())
    result = await loop.run_once()
    assert result.records == 0
    assert consumer.commits == []


async def test_stop_finishes_the_batch_then_closes(alice: User) -> None:
    consumer = FakeConsumer()
    consumer.batches.append([record(b"x", offset=0, key=b"1")])
    loop = make_loop(consumer, FakeProducer())
    running = asyncio.create_task(loop.run())
    await wait_until(lambda: consumer.commits != [])
    loop.request_stop()
    await asyncio.wait_for(running, 10)
    assert consumer.commits == [[("task.events", 0, 1)]]
    assert consumer.closed


class FailingOnceStore(MemoryHotStore):
    """The hot store's edge: the ``fail_on``-th append meets a Redis that is not there."""

    def __init__(self, fail_on: int) -> None:
        super().__init__()
        self.calls = 0
        self.fail_on = fail_on

    async def append(self, events: Any, bodies: Any = None, heads: Any = None) -> list[int]:
        self.calls += 1
        if self.calls == self.fail_on:
            raise redis.exceptions.ConnectionError("the test's Redis outage")
        return await super().append(events, bodies, heads)


def apply_signalling_the_second() -> tuple[asyncio.Event, Callable[..., Any]]:
    """``apply_events``, and an event set (on the loop) when its second call begins."""
    loop = asyncio.get_running_loop()
    second = asyncio.Event()
    calls = [0]

    def apply(events: Any, epoch: str) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            loop.call_soon_threadsafe(second.set)
        return apply_events(events, epoch)

    return second, apply


async def test_the_pipeline_applies_the_next_batch_while_the_last_one_is_finished(
    alice: User,
) -> None:
    """Batch 1's push waits until batch 2 is being applied: that can only happen when the
    two stages overlap (one batch at a time would wait forever). The commits stay in batch
    order, each after its own push."""
    task = await database_sync_to_async(create_task)(alice)
    tid = str(task.id)
    log: list[str] = []
    consumer = FakeConsumer(log=log)
    for n in range(3):
        value = event_value(user_id=alice.pk, task_id=tid, data={"progress": 10 * n})
        consumer.batches.append([record(value, offset=n)])
    second_applying, apply = apply_signalling_the_second()

    class GatedLayer(RecordingLayer):
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            await asyncio.wait_for(second_applying.wait(), 10)
            await super().group_send(group, message)

    loop = make_loop(consumer, FakeProducer(log=log), GatedLayer(log), apply=apply)
    running = asyncio.create_task(loop.run())
    await wait_until(lambda: len(consumer.commits) == 3)
    loop.request_stop()
    await asyncio.wait_for(running, 10)
    group = f"send {bus.user_group(alice.pk)}"
    assert log == [group, "commit"] * 3 + ["flush"]  # the flush: close()
    assert consumer.commits == [[("task.events", 0, n + 1)] for n in range(3)]
    task = await database_sync_to_async(AsyncTask.objects.get)(id=task.id)
    assert task.progress == 20


async def test_the_next_batch_is_read_and_adapted_while_one_is_applied(alice: User) -> None:
    """Batch 1's apply waits until batch 2 has been read from Kafka: only the read-ahead
    does that (a loop that reads after applying would wait out the deadline). Both are
    applied and committed in order."""
    task = await database_sync_to_async(create_task)(alice)
    tid = str(task.id)
    second_read = threading.Event()

    class ReadWatchingConsumer(FakeConsumer):
        def consume(self, num_messages: int = 1, timeout: float = -1) -> Any:
            batch = super().consume(num_messages, timeout)
            if batch and not self.batches:
                second_read.set()
            return batch

    consumer = ReadWatchingConsumer()
    for n in range(2):
        value = event_value(user_id=alice.pk, task_id=tid, data={"progress": 10 * (n + 1)})
        consumer.batches.append([record(value, offset=n)])
    read_while_applying: list[bool] = []

    def apply(events: Any, epoch: str) -> Any:
        if not read_while_applying:
            read_while_applying.append(second_read.wait(5))
        return apply_events(events, epoch)

    loop = make_loop(consumer, FakeProducer(), RecordingLayer([]), apply=apply)
    running = asyncio.create_task(loop.run())
    await wait_until(lambda: len(consumer.commits) == 2)
    loop.request_stop()
    await asyncio.wait_for(running, 10)
    assert read_while_applying == [True]
    assert consumer.commits == [[("task.events", 0, 1)], [("task.events", 0, 2)]]
    task = await database_sync_to_async(AsyncTask.objects.get)(id=task.id)
    assert task.progress == 20


async def test_a_record_that_arrives_while_a_batch_is_finished_is_applied_at_once(
    alice: User,
) -> None:
    """Batch 1's push waits until batch 2 is being applied, and batch 2's record only
    arrives once that push has begun: the read after batch 1 must wait for records while
    batch 1 is finished (a loop that read again only after batch 1's commit would wait
    out the deadline). At low rates that wait is each event's latency."""
    task = await database_sync_to_async(create_task)(alice)
    tid = str(task.id)
    arrived = threading.Event()

    class ArrivingConsumer(FakeConsumer):
        def consume(self, num_messages: int = 1, timeout: float = -1) -> Any:
            if timeout > 0 and not self.batches:
                arrived.wait(timeout)  # a read that waits, as librdkafka's does
            return super().consume(num_messages, timeout)

    log: list[str] = []
    consumer = ArrivingConsumer(log=log)
    later = event_value(user_id=alice.pk, task_id=tid, data={"progress": 20})
    consumer.batches.append(
        [record(event_value(user_id=alice.pk, task_id=tid, data={"progress": 10}), offset=0)]
    )
    second_applying, apply = apply_signalling_the_second()
    calls = {"send": 0}

    class GatedLayer(RecordingLayer):
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            calls["send"] += 1
            if calls["send"] == 1:
                consumer.batches.append([record(later, offset=1)])
                arrived.set()
                await asyncio.wait_for(second_applying.wait(), 10)
            await super().group_send(group, message)

    loop = make_loop(consumer, FakeProducer(log=log), GatedLayer(log), apply=apply, poll_timeout=10)
    running = asyncio.create_task(loop.run())
    await wait_until(lambda: len(consumer.commits) == 2)
    loop.request_stop()
    arrived.set()
    await asyncio.wait_for(running, 20)
    assert consumer.commits == [[("task.events", 0, 1)], [("task.events", 0, 2)]]
    task = await database_sync_to_async(AsyncTask.objects.get)(id=task.id)
    assert task.progress == 20


async def test_an_outage_behind_rewinds_both_batches_to_their_first_records(
    alice: User,
) -> None:
    """Batch 1 (partition 0) fails to store while batch 2 (partition 1) is applied: both
    partitions are rewound and nothing of either is committed until the retry succeeds;
    each event reaches the store once."""
    task = await database_sync_to_async(create_task)(alice)
    tid = str(task.id)
    first = [record(event_value(user_id=alice.pk, task_id=tid), offset=5, partition=0)]
    second = [record(event_value(user_id=alice.pk, task_id=tid), offset=7, partition=1)]
    consumer = FakeConsumer()
    # What Kafka returns: batch 1, batch 2, nothing for the read ahead while batch 2 is
    # applied (its three calls: what is buffered, then the Kafka thread's look again and
    # its wait), then, after the rewind, both again.
    consumer.batches += [first, second, [], [], [], first, second]
    store = FailingOnceStore(fail_on=1)
    loop = make_loop(consumer, FakeProducer(), store=store)
    running = asyncio.create_task(loop.run())
    await wait_until(lambda: len(consumer.commits) == 2)
    loop.request_stop()
    await asyncio.wait_for(running, 10)
    assert sorted(consumer.seeks) == [("task.events", 0, 5), ("task.events", 1, 7)]
    assert consumer.commits == [[("task.events", 0, 6)], [("task.events", 1, 8)]]
    assert loop.outages_in_a_row == 0
    stored = [
        e.offset
        for p in (0, 1)
        for e in (await store.read_after(alice.pk, ("task.events", p), -1, 10)).events
    ]
    assert stored == [5, 7]


@pytest.mark.parametrize("kind", sorted(hostile.KINDS))
async def test_a_poison_record_in_the_middle_of_a_batch_stops_nothing_else(
    alice: User, kind: str
) -> None:
    task = await database_sync_to_async(create_task)(alice)
    tid = str(task.id)
    before = event_value(user_id=alice.pk, task_id=tid, data={"progress": 10})
    after = event_value(user_id=alice.pk, task_id=tid, data={"progress": 20})
    consumer = FakeConsumer()
    key = str(alice.pk).encode()
    consumer.batches.append(
        [
            record(before, offset=0),
            record(hostile.poison(kind, alice.pk, tid), offset=1, key=key),
            record(after, offset=2),
        ]
    )
    dlq = FakeProducer()
    store = MemoryHotStore()
    loop = make_loop(consumer, dlq, store=store)

    result = await loop.run_once()

    assert (result.records, result.delivered, result.dead_lettered) == (3, 2, 1)
    [dead] = dlq.produced
    headers = dict(dead["headers"])
    assert hostile.REASONS[kind] in headers["reason"].decode()
    assert headers["offset"] == b"1"
    assert consumer.commits == [[("task.events", 0, 3)]]
    page = await store.read_after(alice.pk, ("task.events", 0), -1, 10)
    assert [e.offset for e in page.events] == [0, 2]
    task = await database_sync_to_async(AsyncTask.objects.get)(id=task.id)
    assert (task.progress, task.last_event_offset) == (20, 2)


async def test_the_event_the_database_refuses_is_found_and_the_rest_applied_in_order(
    alice: User,
) -> None:
    """A refusal the adapter cannot foresee (here a trigger, as an operator's constraint
    would be): the batch is bisected, the refused event dead-lettered with the database's
    message, every other event applied and delivered in order."""
    if connections["default"].vendor != "postgresql":
        pytest.skip("the refusal is a PostgreSQL trigger")
    task = await database_sync_to_async(create_task)(alice)
    await database_sync_to_async(_install_refusing_trigger)()
    try:
        values = [
            event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": n, "bad": n == 5})
            for n in range(8)
        ]
        consumer = FakeConsumer()
        consumer.batches.append([record(v, offset=n) for n, v in enumerate(values)])
        dlq = FakeProducer()
        store = MemoryHotStore()
        result = await make_loop(consumer, dlq, store=store).run_once()
    finally:
        await database_sync_to_async(_drop_refusing_trigger)()
    assert (result.delivered, result.dead_lettered) == (7, 1)
    [dead] = dlq.produced
    reason = dict(dead["headers"])["reason"].decode()
    assert reason.startswith("database refused it: DataError") and "taskstream test" in reason
    assert dict(dead["headers"])["offset"] == b"5"
    page = await store.read_after(alice.pk, ("task.events", 0), -1, 10)
    assert [e.offset for e in page.events] == [0, 1, 2, 3, 4, 6, 7]
    assert consumer.commits == [[("task.events", 0, 8)]]


def _install_refusing_trigger() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            """
            CREATE OR REPLACE FUNCTION taskstream_test_refuse() RETURNS trigger AS $$
            BEGIN
                IF (NEW.data->>'bad')::boolean THEN
                    RAISE EXCEPTION 'taskstream test refuses this row'
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER taskstream_test_refuse BEFORE INSERT ON tasks_taskeventlog
                FOR EACH ROW EXECUTE FUNCTION taskstream_test_refuse();
            """
        )


def _drop_refusing_trigger() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER IF EXISTS taskstream_test_refuse ON tasks_taskeventlog;"
            "DROP FUNCTION IF EXISTS taskstream_test_refuse();"
        )


async def test_a_database_outage_rewinds_the_batch_dead_letters_nothing_and_recovers(
    alice: User,
) -> None:
    from django.db import OperationalError

    task = await database_sync_to_async(create_task)(alice)
    down = {"calls": 0}

    def apply_while_down(events: Any, epoch: str) -> Any:
        # The database's edge: the first two calls meet a server that is not there.
        down["calls"] += 1
        if down["calls"] <= 2:
            raise OperationalError("connection refused (the test's outage)")
        return apply_events(events, epoch)

    batch = [
        record(event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": n}), offset=n)
        for n in range(3)
    ]
    consumer = FakeConsumer()
    consumer.batches += [batch, batch, batch]  # what Kafka returns after each rewind
    dlq = FakeProducer()
    loop = make_loop(consumer, dlq, apply=apply_while_down)
    first, second, third = [await loop.run_once() for _ in range(3)]
    assert (first.retried, second.retried, third.retried) == (True, True, False)
    assert consumer.seeks == [("task.events", 0, 0)] * 2
    assert dlq.produced == []
    assert consumer.commits == [[("task.events", 0, 3)]]
    assert third.delivered == 3
    assert loop.outages_in_a_row == 0


async def test_offsets_that_go_back_are_applied_only_once_kafka_confirms_the_topic(
    alice: User,
) -> None:
    # A topic re-created under the process resets its position with no other sign
    # (realtime/epoch_watch.py): before applying records whose offsets went back, the
    # consumer asks whether the topic still has its epoch.
    task = await database_sync_to_async(create_task)(alice)

    def progress(n: int, offset: int) -> Any:
        value = event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": n})
        return record(value, offset=offset, partition=1)

    consumer = FakeConsumer()
    first, second = progress(10, 5), progress(20, 6)
    consumer.batches += [[first, second], [second], [progress(40, 0)]]
    loop = make_loop(consumer, FakeProducer())
    answers = iter([True, False])
    asked: list[bool] = []

    def same_topic() -> bool:
        asked.append(answer := next(answers))
        return answer

    loop.epoch_check = same_topic
    assert (await loop.run_once()).delivered == 2  # forward: not asked
    assert asked == []
    # Offset 6 again (a rebalance's re-read): asked, confirmed, applied as a redelivery.
    again = await loop.run_once()
    assert not again.retried and again.delivered == 1 and again.dead_lettered == 0
    assert asked == [True]
    # Offset 0: asked, the topic has another id: nothing applied or committed, stopping.
    result = await loop.run_once()
    assert result.retried and result.delivered == 0 and loop.stopping
    assert asked == [True, False]
    assert consumer.commits == [[("task.events", 1, 7)], [("task.events", 1, 7)]]
    task = await database_sync_to_async(AsyncTask.objects.get)(id=task.id)
    assert task.progress == 20
