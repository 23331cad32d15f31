"""Issue #8 against the real services: no record wedges ``consume_events``, an outage
loses nothing, and no replay path delivers what the live path refused."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from django.conf import settings
from django.contrib.auth.models import User

from streaming import conf
from tasks.models import AsyncTask, TaskEventLog
from tests import hostile
from tests.conftest import Proc, Stack, open_stream
from tests.fakes import event_value
from tests.kafka_helpers import produce, read_all
from tests.sse import SSEEvent, StreamReader, wait_until
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def messages(reader: StreamReader, task: AsyncTask) -> list[str]:
    return [
        json.loads(e.data)["data"].get("message", "")
        for e in reader.of_type("task.")
        if json.loads(e.data)["task_id"] == str(task.id)
    ]


def has_message(label: str, task: AsyncTask, reader: StreamReader) -> bool:
    return label in messages(reader, task)


def dead_letters_with(marker: bytes) -> list[Any]:
    return [
        m for m in read_all(conf.get().TOPIC_DLQ, conf.get().require_kafka()) if marker in m.value()
    ]


@contextlib.contextmanager
def group_reader(group: str) -> Iterator[Consumer]:
    """A consumer of ``group`` that never joins it: it only reads the group's offsets."""
    consumer = Consumer({"bootstrap.servers": conf.get().require_kafka(), "group.id": group})
    try:
        yield consumer
    finally:
        consumer.close()


def committed_offsets(reader: Consumer, topic: str) -> dict[int, int]:
    """The committed offset (the next to read) of ``reader``'s group per partition of
    ``topic``; a partition with none committed is absent."""
    partitions = [TopicPartition(topic, p) for p in range(3)]
    return {
        tp.partition: tp.offset for tp in reader.committed(partitions, timeout=10) if tp.offset >= 0
    }


def committed_to_the_end(group: str, topic: str) -> bool:
    """Every partition's committed offset has reached its high watermark."""
    with group_reader(group) as reader:
        committed = committed_offsets(reader, topic)
        for p in range(3):
            low, high = reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low and committed.get(p, -1) < high:
                return False
        return True


def test_each_poison_kind_alone_and_amid_good_records_stops_nothing(
    stack: Stack, alice: User, streams: list[StreamReader]
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    stream = open_stream(stack, alice)
    streams.append(stream)
    key, tid = str(alice.pk), str(task.id)
    expected: list[str] = []
    sent: dict[str, list[bytes]] = {}

    def good(label: str) -> dict[str, Any]:
        expected.append(label)
        return event_value(user_id=alice.pk, task_id=tid, data={"progress": 1, "message": label})

    def contains(value: bytes) -> bool:
        return value in [
            m.value() for m in read_all(conf.get().TOPIC_DLQ, conf.get().require_kafka())
        ]

    for kind in sorted(hostile.KINDS):
        # Alone in its batch (the consumer dead-letters it and goes on) ...
        lone = hostile.poison(kind, alice.pk, tid)
        produce(conf.get().TOPIC_EVENTS, [(key, lone)])
        wait_until(partial(contains, lone), 30, f"{kind} dead-lettered")
        # ... and between two good records of the same user, in one batch.
        amid = hostile.poison(kind, alice.pk, tid)
        after = f"{kind} after"
        produce(
            conf.get().TOPIC_EVENTS,
            [(key, good(f"{kind} before")), (key, amid), (key, good(after))],
        )
        stream.wait_for(partial(has_message, after, task), 30)
        sent[kind] = [lone, amid]

    # Every good record arrived, in order, once; the consumer never stopped.
    assert messages(stream, task) == expected
    assert stack.consumer.popen is not None and stack.consumer.popen.poll() is None
    assert TaskEventLog.objects.filter(task=task).count() == len(expected)
    # Each poison record is in the dead-letter topic with its reason.
    dead = read_all(conf.get().TOPIC_DLQ, conf.get().require_kafka())
    for kind, values in sent.items():
        reasons = [dict(m.headers())["reason"].decode() for m in dead if m.value() in values]
        assert len(reasons) >= 2, kind
        assert all(hostile.REASONS[kind] in r for r in reasons), (kind, reasons)
    wait_until(
        lambda: committed_to_the_end(conf.get().CONSUMER_GROUP, conf.get().TOPIC_EVENTS),
        30,
        "offsets committed to the end",
    )


@pytest.fixture
def consumer_behind_proxy(stack: Stack, tmp_path: Path) -> Iterator[tuple[Proc, TcpProxy]]:
    """The stack's consume_events replaced by one that reaches PostgreSQL through a proxy
    the test can cut."""
    db = settings.DATABASES["default"]
    proxy = TcpProxy(str(db["HOST"]), int(db["PORT"]))
    env = dict(stack.env)
    env["DATABASE_URL"] = (
        f"postgres://{db['USER']}:{db['PASSWORD']}@127.0.0.1:{proxy.port}/{db['NAME']}"
    )
    stack.consumer.stop()
    proc = Proc("consume_events_behind_proxy", ["manage.py", "consume_events"], env, tmp_path)
    proc.start().wait_log("assigned task.events")
    yield proc, proxy
    proc.stop()
    proxy.close()
    stack.consumer.start()
    stack.consumer.wait_log("assigned task.events")


def test_a_postgresql_outage_under_load_dead_letters_nothing_and_loses_nothing(
    stack: Stack,
    alice: User,
    streams: list[StreamReader],
    consumer_behind_proxy: tuple[Proc, TcpProxy],
) -> None:
    proc, proxy = consumer_behind_proxy
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    stream = open_stream(stack, alice)
    streams.append(stream)
    marker = f"outage-{uuid.uuid4().hex}"
    total = 1500  # 100 events/s for 15 s, with PostgreSQL gone for 10 of them
    values = [
        event_value(
            user_id=alice.pk,
            task_id=str(task.id),
            data={"progress": n % 101, "message": str(n), "marker": marker},
        )
        for n in range(total)
    ]

    def load() -> None:
        for start in range(0, total, 50):
            produce(
                conf.get().TOPIC_EVENTS, [(str(alice.pk), v) for v in values[start : start + 50]]
            )
            time.sleep(0.5)  # paces the producer (the load), not a wait for the system

    producer = threading.Thread(target=load)
    producer.start()
    stream.wait_for(lambda r: len(messages(r, task)) >= 200, 30)
    proxy.cut()
    cut_at = time.monotonic()
    wait_until(lambda: "outage while processing" in proc.log(), 30, "the consumer to see it")
    # Keep it down for ~10 s while the load goes on.
    wait_until(lambda: time.monotonic() - cut_at >= 10, 15, "ten seconds of outage")
    delivered_during = len(messages(stream, task))
    proxy.restore()
    producer.join(60)
    stream.wait_for(lambda r: len(messages(r, task)) >= total, 90)

    assert messages(stream, task) == [str(n) for n in range(total)]  # none lost, none twice
    assert delivered_during < total  # the outage did hold delivery back
    assert TaskEventLog.objects.filter(task=task).count() == total
    assert dead_letters_with(marker.encode()) == []
    assert proc.popen is not None and proc.popen.poll() is None
    assert "outage while processing" in proc.log()


def test_kafka_replay_skips_a_record_consume_events_rejected(
    stack: Stack, alice: User, bob: User, streams: list[StreamReader]
) -> None:
    mine = AsyncTask.objects.create(owner=alice, kind="demo")
    bobs = AsyncTask.objects.create(owner=bob, kind="demo")
    key = str(alice.pk)
    stream = open_stream(stack, alice)
    streams.append(stream)

    def value(task: AsyncTask, label: str) -> dict[str, Any]:
        return event_value(
            user_id=alice.pk, task_id=str(task.id), data={"progress": 1, "message": label}
        )

    produce(conf.get().TOPIC_EVENTS, [(key, value(mine, "start"))])
    stream.wait_for(lambda r: "start" in messages(r, mine), 30)
    [start] = [
        e for e in stream.of_type("task.") if json.loads(e.data)["data"]["message"] == "start"
    ]
    assert start.id is not None
    # Alice's key, Bob's task: consume_events rejects it ("task belongs to another user").
    produce(
        conf.get().TOPIC_EVENTS,
        [(key, value(mine, "one")), (key, value(bobs, "forged")), (key, value(mine, "two"))],
    )
    stream.wait_for(lambda r: "two" in messages(r, mine), 30)
    assert wait_until(lambda: dead_letters_with(b"forged"), 30, "the rejected record")
    assert all(json.loads(e.data)["task_id"] != str(bobs.id) for e in stream.of_type("task."))

    # Lose the hot store's copy of Alice's partition: a resume must now read Kafka.
    source, partition = start.id.split("@")[0].rsplit(":", 2)[:2]
    store_key = f"{conf.get().REDIS_PREFIX}:r:{alice.pk}:{source}:{partition}"
    assert redis.Redis.from_url(conf.get().REDIS_URL).delete(store_key) == 1
    resumed = open_stream(stack, alice, cursor=start.id)
    streams.append(resumed)
    resumed.wait_for(lambda r: "two" in messages(r, mine), 30)
    replayed: list[SSEEvent] = resumed.of_type("task.")
    assert [json.loads(e.data)["data"]["message"] for e in replayed] == ["one", "two"]
    assert resumed.response_headers is not None
