"""``?since=`` against the real stack (#13, "Done when"): records produced at known times,
a stream opened with a time between two of them gets exactly the user's events at or after
it, with the ids a plain stream gives them, then the live ones, with no gap and no
duplicate; Last-Event-ID wins over it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from confluent_kafka import Producer
from django.contrib.auth.models import User

from realtime.replay.selection import first_offsets_at
from streaming import conf
from streaming.kafka import RangeReader, producer_config
from tasks.models import AsyncTask
from tests.conftest import Stack, access_token, open_stream
from tests.fakes import event_value
from tests.sse import SSEEvent, StreamReader, wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def progress(event: SSEEvent) -> int:
    return int(json.loads(event.data)["data"]["progress"])


def since(when: datetime) -> str:
    return "?since=" + quote(when.isoformat())


def older_partition(when: datetime) -> int:
    """A partition of the events topic with no record stamped at or after ``when``."""
    reader = RangeReader("test-since")
    try:
        topic = conf.get().TOPIC_EVENTS
        partitions = reader.partitions(topic)
        firsts = first_offsets_at(reader, topic, partitions, when)
    finally:
        reader.close()
    clean = [p for p in partitions if firsts.get(p, -1) < 0]
    assert clean, f"every partition of {topic} holds records stamped after {when}"
    return clean[0]


def test_since_returns_exactly_the_events_at_or_after_the_time_then_live_ones(
    stack: Stack, alice: User, bob: User, streams: list[StreamReader]
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    other = AsyncTask.objects.create(owner=bob, kind="demo")
    live = open_stream(stack, alice)
    streams.append(live)
    # Alice's records 1, 2, 3 one second apart (their Kafka timestamps set explicitly),
    # and one of Bob's between them, all in a partition where every earlier record is
    # older (tests/test_replay_events.py leaves records stamped minutes ahead in one).
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    partition = older_partition(base)
    producer = Producer(producer_config())
    stamps = [(alice, task, 1, 0), (bob, other, 9, 500), (alice, task, 2, 1000)]
    stamps.append((alice, task, 3, 2000))
    for who, which, n, ms in stamps:
        value = event_value(user_id=who.pk, task_id=str(which.id), data={"progress": n})
        producer.produce(
            conf.get().TOPIC_EVENTS,
            key=str(who.pk),
            value=json.dumps(value),
            partition=partition,
            timestamp=int((base + timedelta(milliseconds=ms)).timestamp() * 1000),
        )
    assert producer.flush(30) == 0
    live.wait_for(lambda r: len(r.of_type("task.")) >= 3, 30)
    ids = {progress(e): e.id for e in live.of_type("task.")}
    # A time must not be in the server's future: wait until the last record's is past.
    wait_until(lambda: datetime.now(UTC) > base + timedelta(seconds=2), 10, "the clock")

    for at in (base + timedelta(milliseconds=400), base + timedelta(seconds=1)):
        reader = open_stream(stack, alice, query=since(at))
        streams.append(reader)
        assert reader.status == 200, reader.body
        reader.wait_for(lambda r: len(r.of_type("task.")) >= 2, 30)
        assert [(progress(e), e.id) for e in reader.of_type("task.")] == [
            (2, ids[2]),
            (3, ids[3]),
        ], at
        assert "stream-reset" not in [e.event for e in reader.events]

    # Then live: the next event follows, once, on the stream opened by time.
    value = event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": 4})
    producer.produce(
        conf.get().TOPIC_EVENTS, key=str(alice.pk), value=json.dumps(value), partition=partition
    )
    assert producer.flush(30) == 0
    reader.wait_for(lambda r: len(r.of_type("task.")) >= 3, 30)
    live.wait_for(lambda r: len(r.of_type("task.")) >= 4, 30)
    got = [(progress(e), e.id) for e in reader.of_type("task.")]
    assert got == [(2, ids[2]), (3, ids[3]), (4, live.of_type("task.")[-1].id)]

    # Last-Event-ID wins: the stream continues after the cursor, whatever the time says.
    resumed = open_stream(stack, alice, cursor=ids[2], query=since(base))
    streams.append(resumed)
    resumed.wait_for(lambda r: len(r.of_type("task.")) >= 2, 30)
    assert [progress(e) for e in resumed.of_type("task.")] == [3, 4]


def test_a_bad_since_is_a_400_naming_the_parameter(stack: Stack, alice: User) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for value in ("garbage", "%00", future, "2026-01-02T03:04:05"):
        response = httpx.get(
            f"{stack.base}/api/v1/events/stream?since={quote(value, safe='%')}",
            headers={"Authorization": f"Bearer {access_token(alice)}"},
            timeout=10,
        )
        assert response.status_code == 400, value
        body = response.json()
        assert body["code"] == "bad_since" and body["detail"].startswith("since: "), body
