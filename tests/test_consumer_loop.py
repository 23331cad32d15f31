"""The consume_events loop, one batch at a time: fake Kafka edge, real DB and layer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer
from django.contrib.auth.models import User
from django.db import connections

from realtime.hub import Hub, Subscriber
from realtime.ingest import DeadLetterError, EventConsumer
from realtime.store import MemoryHotStore
from tasks.models import AsyncTask, TaskStatus
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


def make_loop(
    consumer: FakeConsumer, producer: FakeProducer, layer: Any = None, store: Any = None
) -> EventConsumer:
    return EventConsumer(
        cast(Any, consumer),
        cast(Any, producer),
        layer or InMemoryChannelLayer(),
        store or MemoryHotStore(),
        epoch="E1",
        dlq_topic="task.events.dlq",
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
    assert reasons[0].startswith("value is not JSON")
    assert reasons[1] == "unknown user"
    assert all(p["topic"] == "task.events.dlq" for p in dlq.produced)
    assert dict(dlq.produced[0]["headers"])["offset"] == b"11"
    # The dead letters are acknowledged and the push is done before the offsets commit.
    assert log == ["flush", f"send ts.user.{alice.pk}", "commit"]
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


async def test_nothing_is_committed_when_the_dead_letter_topic_does_not_ack(alice: User) -> None:
    consumer = FakeConsumer()
    consumer.batches.append([record(b"not json", offset=0, key=b"1")])
    dlq = FakeProducer(unacked_on_flush=1)
    loop = make_loop(consumer, dlq)
    with pytest.raises(DeadLetterError):
        await loop.run_once()
    assert consumer.commits == []


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
    original = loop.run_once

    async def run_once_then_stop() -> Any:
        result = await original()
        loop.request_stop()
        return result

    loop.run_once = run_once_then_stop  # type: ignore[method-assign]
    await loop.run()
    assert consumer.commits == [[("task.events", 0, 1)]]
    assert consumer.closed
