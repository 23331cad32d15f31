"""``manage.py replay_events``: selection, ids, filtering, re-delivery and rebuild.

Unit tests drive ``realtime.replay_command`` with a fake consumer at the broker edge and
the in-memory hot store; the ``services`` tests run the real command against Kafka, Redis
and PostgreSQL and compare it with what a real HTTP stream replays."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer, TopicPartition
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from realtime import bus
from realtime.replay.events import EventReplay
from realtime.replay.selection import ReplayError, Selection
from realtime.store_memory import MemoryHotStore
from streaming import conf
from streaming.kafka import RangeReader, producer_config
from tasks.apply import apply_events
from tasks.delivery import deliverable
from tasks.models import AsyncTask, TaskEventLog, TaskStatus
from tests.conftest import ROOT, Stack, access_token, open_stream
from tests.fakes import FakeMessage, event_value
from tests.kafka_helpers import produce
from tests.sse import SSEEvent, StreamReader, parse_stream, wait_until

EPOCH = "EpochOne"


def source() -> str:
    return conf.get().TOPIC_EVENTS


# --- the broker edge ----------------------------------------------------------------------


@dataclass
class FakeRangeConsumer:
    """The consumer calls RangeReader makes, over in-memory partitions."""

    partitions: dict[int, list[FakeMessage]] = field(default_factory=dict)
    timestamps: dict[tuple[int, int], int] = field(default_factory=dict)  # (p, offset) → ms
    low: dict[int, int] = field(default_factory=dict)
    assigned: list[tuple[int, int]] = field(default_factory=list)
    _position: tuple[int, int] | None = None
    closed: bool = False

    def add(self, partition: int, key: str, value: dict[str, Any] | bytes, ts: int = 0) -> int:
        records = self.partitions.setdefault(partition, [])
        offset = self.low.get(partition, 0) + len(records)
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        records.append(FakeMessage(source(), partition, offset, raw, key.encode()))
        self.timestamps[(partition, offset)] = ts
        return offset

    def list_topics(self, topic: str, timeout: float = -1) -> Any:
        meta = SimpleNamespace(error=None, partitions={p: None for p in self.partitions})
        return SimpleNamespace(topics={topic: meta} if topic == source() else {})

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = -1) -> tuple[int, int]:
        low = self.low.get(tp.partition, 0)
        return low, low + len(self.partitions.get(tp.partition, []))

    def offsets_for_times(self, tps: list[TopicPartition], timeout: float = -1) -> Any:
        found = []
        for tp in tps:
            offsets = [
                m.offset()
                for m in self.partitions.get(tp.partition, [])
                if self.timestamps[(tp.partition, m.offset())] >= tp.offset
            ]
            found.append(TopicPartition(tp.topic, tp.partition, min(offsets, default=-1)))
        return found

    def assign(self, tps: list[TopicPartition]) -> None:
        (tp,) = tps
        self.assigned.append((tp.partition, tp.offset))
        self._position = (tp.partition, tp.offset)

    def unassign(self) -> None:
        self._position = None

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        assert self._position is not None
        partition, offset = self._position
        low = self.low.get(partition, 0)
        batch = self.partitions.get(partition, [])[offset - low : offset - low + 2]
        self._position = (partition, offset + len(batch))
        return batch

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        assert self._position is not None
        return [TopicPartition(tps[0].topic, self._position[0], self._position[1])]

    def close(self) -> None:
        self.closed = True


class RecordingLayer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.sent.append((group, message))


@pytest.fixture
def kafka() -> FakeRangeConsumer:
    return FakeRangeConsumer()


@pytest.fixture
def store() -> MemoryHotStore:
    memory = MemoryHotStore()
    asyncio.run(memory.set_epoch(source(), EPOCH))
    return memory


def replay(
    kafka: FakeRangeConsumer,
    store: MemoryHotStore | None = None,
    *,
    consume: bool = True,
    **selection: Any,
) -> EventReplay:
    if consume:
        consumed(None, kafka)  # idempotent: what consume_events has done by now
    return EventReplay(
        Selection(**selection),
        RangeReader("replay-events", kafka, timeout=1),
        store_factory=None if store is None else (lambda: store),
        epoch_of=lambda _source: EPOCH,
    )


def consumed(store: MemoryHotStore | None, kafka: FakeRangeConsumer) -> None:
    """What consume_events did with the fake partitions: apply, store, record heads (a
    replay sends only what was delivered, so every test consumes first)."""
    from streaming.adapter import InvalidRecord, adapt

    for partition, records in kafka.partitions.items():
        events = []
        for message in records:
            with contextlib.suppress(InvalidRecord):
                events.append(adapt(message))
        applied = apply_events(events, EPOCH)
        if store is None:
            continue
        asyncio.run(store.append([a.event for a in applied if a.deliver]))
        if records:
            asyncio.run(store.set_heads({(source(), partition): records[-1].offset()}))


def cid(*positions: tuple[int, int]) -> str:
    return ",".join(f"{source()}:{p}:{o}@{EPOCH}" for p, o in sorted(positions))


# --- unit ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_from_a_cursor_ids_are_the_stream_cursor_advanced_per_event(
    alice: User, bob: User, kafka: FakeRangeConsumer, store: MemoryHotStore
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    bobs = AsyncTask.objects.create(owner=bob, kind="demo")
    a, b = str(alice.pk), str(bob.pk)
    for progress in (10, 20, 30):
        kafka.add(
            0, a, event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": progress})
        )
        kafka.add(0, b, event_value(user_id=bob.pk, task_id=str(bobs.id)))
    kafka.add(1, a, event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": 40}))
    kafka.add(1, a, event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": 50}))
    consumed(store, kafka)

    # The client holds both partitions: ids name both, advanced one partition at a time,
    # partitions in cursor order, exactly as realtime.stream replays.
    report = replay(kafka, store, user_id=alice.pk, from_cursor=cid((0, 0), (1, 0))).select()
    assert [i.cursor for i in report.items] == [
        cid((0, 2), (1, 0)),
        cid((0, 4), (1, 0)),
        cid((0, 4), (1, 1)),
    ]
    assert [json.loads(i.data())["data"]["progress"] for i in report.items] == [20, 30, 50]
    assert all(i.frame == f"id: {i.cursor}\n{i.event.sse_body()}" for i in report.items)
    # prev: the user's previous event in the partition (the cursor's offset for the first).
    assert [i.prev for i in report.items] == [0, 2, 0]
    # One consumer, assigned once per range, starting just after the cursor.
    assert kafka.assigned == [(0, 1), (1, 1)]


@pytest.mark.django_db
def test_only_what_consume_events_delivers_is_replayed(
    alice: User, bob: User, kafka: FakeRangeConsumer, store: MemoryHotStore
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    bobs = AsyncTask.objects.create(owner=bob, kind="demo")
    a = str(alice.pk)
    first = event_value(user_id=alice.pk, task_id=str(task.id))
    kafka.add(0, a, first)
    kafka.add(0, a, b"{not json")
    kafka.add(0, a, event_value(user_id=alice.pk, task_id=str(uuid.uuid4())))  # unknown task
    kafka.add(0, a, event_value(user_id=alice.pk, task_id=str(bobs.id)))  # bob's task
    kafka.add(0, a, first)  # a producer retry: same event id, new position
    last = event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": 99})
    kafka.add(0, a, last)
    consumed(store, kafka)

    report = replay(kafka, user_id=alice.pk).select()
    assert [i.event.event_id for i in report.items] == [first["event_id"], last["event_id"]]
    assert [i.cursor for i in report.items] == [cid((0, 0)), cid((0, 5))]
    assert [i.prev for i in report.items] == [-1, 0]
    assert report.skipped["poison"] == 1
    assert report.skipped["not delivered by consume_events"] == 3
    # The same events the store holds, so the same a stream replays from it.
    stored = asyncio.run(store.read_after(alice.pk, (source(), 0), -1, 100))
    assert [e.offset for e in stored.events] == [0, 5]
    assert [e.body for e in stored.events] == [i.event.sse_body() for i in report.items]


@pytest.mark.django_db
def test_replay_delivers_exactly_what_apply_events_delivered(
    alice: User, bob: User, kafka: FakeRangeConsumer
) -> None:
    from streaming.adapter import adapt

    task = AsyncTask.objects.create(owner=alice, kind="demo")
    bobs = AsyncTask.objects.create(owner=bob, kind="demo")
    first = event_value(user_id=alice.pk, task_id=str(task.id))
    for value in (
        first,
        event_value(user_id=alice.pk, task_id=str(bobs.id)),
        event_value(user_id=alice.pk, task_id=str(uuid.uuid4())),
        first,
        event_value(user_id=alice.pk, task_id=str(task.id), event_type="task.succeeded", data={}),
        event_value(user_id=alice.pk, task_id=str(task.id)),  # stale: after a final state
    ):
        kafka.add(0, str(alice.pk), value)
    events = [adapt(m) for m in kafka.partitions[0]]
    # Not consumed yet: nothing was delivered, so a replay has nothing to send.
    assert deliverable(events, EPOCH) == [False] * 6
    live = [a.deliver for a in apply_events(events, EPOCH)]
    assert live == [True, False, False, False, True, True]
    # Read back from Kafka afterwards: the same answer for the same records.
    assert deliverable(events, EPOCH) == live


@pytest.mark.django_db
def test_task_filter_keeps_the_full_streams_ids_and_prevs(
    alice: User, kafka: FakeRangeConsumer
) -> None:
    one = AsyncTask.objects.create(owner=alice, kind="demo")
    two = AsyncTask.objects.create(owner=alice, kind="demo")
    for task in (one, two, one, two):
        kafka.add(2, str(alice.pk), event_value(user_id=alice.pk, task_id=str(task.id)))
    report = replay(kafka, user_id=alice.pk, task_id=str(two.id).upper()).select()
    assert [i.cursor for i in report.items] == [cid((2, 1)), cid((2, 3))]
    # prev is the user's previous event of any task: a stream that lacks it fills it first.
    assert [i.prev for i in report.items] == [0, 2]
    assert report.skipped["other task"] == 2


@pytest.mark.django_db
def test_offset_and_time_ranges(alice: User, kafka: FakeRangeConsumer) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    kafka.low[1] = 10  # retention deleted offsets 0..9
    for i in range(5):
        value = event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": i})
        kafka.add(1, str(alice.pk), value, ts=1000 * (i + 1))

    def progresses(**selection: Any) -> list[int]:
        items = replay(kafka, user_id=alice.pk, **selection).select().items
        return [json.loads(i.data())["data"]["progress"] for i in items]

    assert progresses(partition=1, start_offset=11, end_offset=13) == [1, 2, 3]
    assert progresses(partition=1, start_offset=12) == [2, 3, 4]
    assert progresses(partition=1, end_offset=10) == [0]
    # --since: the first record at or after the time; --until: before it.
    at = datetime.fromtimestamp(2.5, UTC)
    assert progresses(since=at) == [2, 3, 4]
    assert progresses(since=datetime.fromtimestamp(2, UTC)) == [1, 2, 3, 4]
    assert progresses(since=at, until=datetime.fromtimestamp(4, UTC)) == [2]
    assert progresses(until=datetime.fromtimestamp(3, UTC)) == [0, 1]
    assert progresses() == [0, 1, 2, 3, 4]
    # Ids of a range start from an empty cursor, like a stream replaying from the earliest.
    first = replay(kafka, user_id=alice.pk, since=at).select().items[0]
    assert first.cursor == cid((1, 12))
    assert first.prev == 11


@pytest.mark.django_db
def test_clear_errors(
    alice: User, kafka: FakeRangeConsumer, store: MemoryHotStore, settings: Any
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    for _ in range(3):
        kafka.add(0, str(alice.pk), event_value(user_id=alice.pk, task_id=str(task.id)))
    kafka.add(1, "x", b"{}")
    consumed(store, kafka)
    late = datetime.fromtimestamp(10, UTC)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"user_id": 987654}, "unknown user 987654"),
        ({"source": "secrets"}, "source 'secrets' is not allowed"),
        ({"from_cursor": "nonsense"}, "--from is not a cursor"),
        ({"from_cursor": f"other.topic:0:1@{EPOCH}"}, "source_forbidden"),
        ({"from_cursor": cid((0, 99))}, "cursor-ahead"),
        ({"from_cursor": f"{source()}:0:1@OtherEpoch"}, "epoch-changed"),
        ({"from_cursor": cid((0, 0)), "partition": 0}, "--from cannot be combined"),
        ({"task_id": "not-a-uuid"}, "--task is not a UUID"),
        ({"start_offset": 1}, "need --partition"),
        ({"partition": 0, "start_offset": 2, "end_offset": 1}, "empty range"),
        ({"partition": 0, "start_offset": 3}, "empty range: " + source() + ":0 holds offsets 0..2"),
        ({"partition": 7}, "partition 7 does not exist"),
        ({"since": late}, "no records at or after --since"),
        ({"since": late, "until": late}, "empty range: --since is not before --until"),
        ({"since": datetime(2026, 1, 1)}, "needs a time zone"),
    ]
    for selection, message in cases:
        with pytest.raises(ReplayError, match=message.replace("(", r"\(").replace(".", r"\.")):
            replay(kafka, store, **{"user_id": alice.pk, **selection}).select()
    with pytest.raises(ReplayError, match="--from needs --user"):
        replay(kafka, store, from_cursor=cid((0, 0))).select()
    # A store trimmed to its last event, as consume_events filled it.
    trimmed = MemoryHotStore(max_events=1)
    asyncio.run(trimmed.set_epoch(source(), EPOCH))
    consumed(trimmed, kafka)
    # Retention deletes offsets 0 and 1: Kafka cannot serve a cursor at 0. The complete
    # store could (a stream would replay from it), but this command reads Kafka.
    kafka.low[0] = 2
    kafka.partitions[0] = kafka.partitions[0][2:]
    with pytest.raises(ReplayError, match="--from is expired"):
        replay(kafka, store, user_id=alice.pk, from_cursor=cid((0, 0))).select()
    # The trimmed store sends plan_resume to Kafka (on this command's one consumer): a
    # stream would reset, and the command says so.
    with pytest.raises(ReplayError, match=r"cannot be resumed \(cursor-expired\)"):
        replay(kafka, trimmed, user_id=alice.pk, from_cursor=cid((0, 0))).select()
    settings.TASKSTREAM = {**settings.TASKSTREAM, "REDIS_URL": ""}
    with pytest.raises(ReplayError, match="--from needs REDIS_URL"):
        replay(kafka, user_id=alice.pk, from_cursor=cid((0, 0))).select()


@pytest.mark.django_db
def test_redelivery_publishes_each_users_events_with_prevs_and_epoch(
    alice: User, kafka: FakeRangeConsumer, store: MemoryHotStore
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    for _ in range(5):
        kafka.add(0, str(alice.pk), event_value(user_id=alice.pk, task_id=str(task.id)))
    consumed(store, kafka)
    layer = RecordingLayer()
    job = EventReplay(
        Selection(user_id=alice.pk, from_cursor=cid((0, 1))),
        RangeReader("replay-events", kafka, timeout=1),
        store_factory=lambda: store,
        layer=layer,
        epoch_of=lambda _source: EPOCH,
    )
    report = job.select(for_delivery=True)
    assert job.deliver(report, batch=2) == 2
    items = [
        item
        for _, message in layer.sent
        for _uid, user_items in message["events"]
        for item in user_items
    ]
    assert {group for group, _ in layer.sent} == {bus.user_group(alice.pk)}
    assert [tuple(item[:5]) for item in items] == [
        (source(), 0, 2, 1, EPOCH),
        (source(), 0, 3, 2, EPOCH),
        (source(), 0, 4, 3, EPOCH),
    ]
    assert [item[5] for item in items] == [i.event.sse_body() for i in report.items]


@pytest.mark.django_db
def test_redelivery_refuses_when_the_store_knows_another_epoch(
    alice: User, kafka: FakeRangeConsumer, store: MemoryHotStore
) -> None:
    kafka.add(0, str(alice.pk), b"{}")
    job = EventReplay(
        Selection(user_id=alice.pk),
        RangeReader("replay-events", kafka, timeout=1),
        store_factory=lambda: store,
        epoch_of=lambda _source: "NewEpoch",
    )
    with pytest.raises(ReplayError, match="consume_events has not run since"):
        job.select(for_delivery=True)


@pytest.mark.django_db
def test_rebuild_state_reapplies_what_the_database_lost(
    alice: User, kafka: FakeRangeConsumer
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    gone = uuid.uuid4()
    tid = str(task.id)
    for value in (
        event_value(user_id=alice.pk, task_id=tid, event_type="task.started", data={}),
        event_value(user_id=alice.pk, task_id=tid, data={"progress": 50}),
        event_value(user_id=alice.pk, task_id=str(gone)),  # its row is lost for good
        event_value(user_id=alice.pk, task_id=tid, event_type="task.succeeded", data={}),
    ):
        kafka.add(0, str(alice.pk), value)
    job = replay(kafka, user_id=alice.pk, consume=False)  # the database lost it all
    report = job.read()
    outcomes = job.rebuild(report)
    assert outcomes == {"applied": 3, "rejected (unknown task)": 1}
    task.refresh_from_db()
    assert (task.status, task.progress, task.last_event_offset) == (TaskStatus.SUCCEEDED, 100, 3)
    assert task.last_event_id == cid((0, 3))
    assert TaskEventLog.objects.filter(task=task).count() == 3
    assert [i.cursor for i in report.items] == [cid((0, 0)), cid((0, 1)), cid((0, 3))]
    # Idempotent: a second run changes nothing.
    assert job.rebuild(job.read()) == {"redelivered": 3, "rejected (unknown task)": 1}


@pytest.mark.django_db
def test_command_argument_errors(alice: User) -> None:
    with pytest.raises(CommandError, match="--user is required to re-deliver"):
        call_command("replay_events")
    with pytest.raises(CommandError, match="--rebuild-state writes task state"):
        call_command("replay_events", "--user", str(alice.pk), "--dry-run", "--rebuild-state")
    with pytest.raises(CommandError, match="not an ISO-8601 time"):
        call_command("replay_events", "--dry-run", "--since", "yesterday")


# --- against the real services ------------------------------------------------------------


def run_command(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "manage.py", "replay_events", *args],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


def has_event(reader: StreamReader, event_id: str) -> bool:
    return any(json.loads(e.data)["event_id"] == event_id for e in reader.of_type("task."))


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_dry_run_from_an_id_lists_exactly_what_the_http_stream_replays(
    stack: Stack, alice: User, bob: User, streams: list[StreamReader]
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    other = AsyncTask.objects.create(owner=alice, kind="demo")
    bobs = AsyncTask.objects.create(owner=bob, kind="demo")
    live = open_stream(stack, alice)
    streams.append(live)
    key = str(alice.pk)
    first = event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": 1})
    good = [first] + [
        event_value(user_id=alice.pk, task_id=str(t.id), data={"progress": n, "message": "a\nb"})
        for n, t in enumerate([task, other, task, other, task], start=2)
    ]
    records: list[tuple[str, bytes | str | dict[str, Any]]] = [(key, v) for v in good[:3]]
    records += [
        (key, "{poison"),
        (key, event_value(user_id=alice.pk, task_id=str(uuid.uuid4()))),  # unknown task
        (key, event_value(user_id=alice.pk, task_id=str(bobs.id))),  # another user's task
        (key, first),  # a producer retry
        (str(bob.pk), event_value(user_id=bob.pk, task_id=str(bobs.id))),
    ]
    records += [(key, v) for v in good[3:]]
    produce(conf.get().TOPIC_EVENTS, records)
    live.wait_for(lambda r: has_event(r, good[-1]["event_id"]), 30)
    assert [json.loads(e.data)["event_id"] for e in live.of_type("task.")] == [
        v["event_id"] for v in good
    ]

    resume_at = live.of_type("task.")[1].id
    assert resume_at is not None
    resumed = open_stream(stack, alice, resume_at)
    streams.append(resumed)
    resumed.wait_for(lambda r: has_event(r, good[-1]["event_id"]), 30)
    over_http = [(e.id, e.event, e.data) for e in resumed.of_type("task.")]
    assert len(over_http) == len(good) - 2

    jsonl = run_command(stack, "--user", key, "--from", resume_at, "--dry-run", "--format", "jsonl")
    lines = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [(d["id"], d["event"], d["data"]) for d in lines] == over_http
    assert "skipped: 1 poison, 3 not delivered by consume_events" in jsonl.stderr
    sse = run_command(stack, "--user", key, "--from", resume_at, "--dry-run")
    frames = [e for e in parse_stream(sse.stdout.split("\n")) if isinstance(e, SSEEvent)]
    assert [(e.id, e.event, e.data) for e in frames] == over_http
    # --task narrows the list; each event keeps the id the full stream gives it.
    only = run_command(
        stack,
        "--user",
        key,
        "--from",
        resume_at,
        "--task",
        str(other.id),
        "--dry-run",
        "--format",
        "jsonl",
    )
    assert [json.loads(line)["id"] for line in only.stdout.splitlines()] == [
        i for i, _, d in over_http if json.loads(d)["task_id"] == str(other.id)
    ]


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_since_picks_the_first_event_at_or_after_the_time(
    stack: Stack, alice: User, streams: list[StreamReader]
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    live = open_stream(stack, alice)
    streams.append(live)
    # Record timestamps a little in the future: every earlier record of this session's
    # topic is older, so the time maps to exactly these offsets.
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    values = [
        event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": n}) for n in (1, 2, 3)
    ]
    producer = Producer(producer_config())
    for n, value in enumerate(values):
        stamp = int((base + timedelta(seconds=n)).timestamp() * 1000)
        producer.produce(
            conf.get().TOPIC_EVENTS, key=str(alice.pk), value=json.dumps(value), timestamp=stamp
        )
    assert producer.flush(30) == 0
    live.wait_for(lambda r: has_event(r, values[-1]["event_id"]), 30)
    ids = [e.id for e in live.of_type("task.")]

    def listed(*args: str) -> list[tuple[str, int]]:
        done = run_command(stack, "--user", str(alice.pk), "--dry-run", "--format", "jsonl", *args)
        return [
            (d["id"], json.loads(d["data"])["data"]["progress"])
            for d in map(json.loads, done.stdout.splitlines())
        ]

    half = (base + timedelta(milliseconds=500)).isoformat()
    assert listed("--since", half) == [(ids[1], 2), (ids[2], 3)]
    assert listed("--since", (base + timedelta(seconds=1)).isoformat()) == [
        (ids[1], 2),
        (ids[2], 3),
    ]
    until = (base + timedelta(seconds=2)).isoformat()
    assert listed("--since", half, "--until", until) == [(ids[1], 2)]
    later = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "replay_events",
            "--dry-run",
            "--since",
            (base + timedelta(minutes=1)).isoformat(),
        ],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert later.returncode != 0
    assert "no records at or after --since" in later.stderr


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_rebuild_state_restores_a_task_whose_rows_were_rolled_back(
    stack: Stack, alice: User, streams: list[StreamReader]
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    tid = str(task.id)
    values = [
        event_value(user_id=alice.pk, task_id=tid, event_type="task.started", data={}),
        event_value(user_id=alice.pk, task_id=tid, data={"progress": 60, "message": "m"}),
        event_value(user_id=alice.pk, task_id=tid, event_type="task.succeeded", data={"result": 7}),
    ]
    produce(conf.get().TOPIC_EVENTS, [(str(alice.pk), v) for v in values])
    wait_until(
        lambda: AsyncTask.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED, 30, "applied"
    )
    before = AsyncTask.objects.get(pk=task.pk)
    # A restore from a backup taken before the events: history and state are gone.
    TaskEventLog.objects.filter(task=task).delete()
    AsyncTask.objects.filter(pk=task.pk).update(
        status=TaskStatus.PENDING,
        progress=0,
        result=None,
        started_at=None,
        finished_at=None,
        last_event_source="",
        last_event_partition=None,
        last_event_offset=None,
        last_event_epoch="",
    )
    done = run_command(stack, "--user", str(alice.pk), "--task", tid, "--rebuild-state")
    assert "rebuilt task state: 3 applied" in done.stderr
    assert "re-delivered 3 event(s) in 1 layer message(s)" in done.stderr
    after = AsyncTask.objects.get(pk=task.pk)
    assert (after.status, after.progress, after.result) == (TaskStatus.SUCCEEDED, 100, 7)
    assert after.last_event_id == before.last_event_id
    assert TaskEventLog.objects.filter(task=task).count() == 3
    # A stream opened now resumes from the rebuilt task's position with nothing missing.
    response = httpx.get(
        f"{stack.base}/api/v1/tasks/{tid}/",
        headers={"Authorization": f"Bearer {access_token(alice)}"},
    )
    assert response.json()["last_event_id"] == before.last_event_id
