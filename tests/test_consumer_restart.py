"""Crash recovery of consume_events (#10): with static group membership
(TASKSTREAM_CONSUMER_INSTANCE_ID), a process killed with SIGKILL and restarted takes its
partitions back at once, instead of after the group's session timeout (10 s)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connection

from streaming import conf
from streaming.kafka import ensure_topics
from tasks.models import AsyncTask, TaskEventLog
from tests.conftest import Proc
from tests.fakes import event_value
from tests.kafka_helpers import produce
from tests.sse import wait_until
from tests.test_ingest_faults import committed_offsets, committed_to_the_end, group_reader

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

SESSION_TIMEOUT = 10.0  # consumer_config's session.timeout.ms


def produce_to_every_partition(topic: str, label: str) -> None:
    # Keys 1..30 land on all three partitions; unknown tasks are fine (counted, committed).
    produce(
        topic,
        [
            (str(k), event_value(user_id=k, task_id=str(uuid.uuid4()), data={"message": label}))
            for k in range(1, 31)
        ],
    )


def test_a_killed_consume_events_restarted_with_its_id_resumes_within_seconds(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    group = f"taskstream-restart-{uuid.uuid4().hex[:8]}"
    env = {
        **stack_env,
        "TASKSTREAM_CONSUMER_GROUP": group,
        "TASKSTREAM_CONSUMER_INSTANCE_ID": "consume-events-1",
    }
    topic = conf.get().TOPIC_EVENTS
    consumer = Proc("consume_events", ["manage.py", "consume_events"], env, tmp_path).start()
    try:
        consumer.wait_log("assigned task.events")
        produce_to_every_partition(topic, "before")
        wait_until(lambda: committed_to_the_end(group, topic), 30, "the first records committed")

        consumer.kill()  # SIGKILL: no commit, no LeaveGroup
        consumer.start()
        restarted = time.monotonic()
        produce_to_every_partition(topic, "after")
        wait_until(lambda: committed_to_the_end(group, topic), 60, "records after the restart")
        recovery = time.monotonic() - restarted
    finally:
        consumer.stop()
    print(f"consume_events restart: every partition consumed again {recovery:.1f} s after it")
    # Dynamic membership waits out the dead member's session (>= 10 s, 35 s measured under
    # load in #10); static membership hands its partitions straight back.
    assert recovery < SESSION_TIMEOUT * 0.6, recovery


USERS = 40
EVENTS_PER_USER = 100  # under the hot store's 1,000 per user


class BusMember:
    """A member of the bus group (realtime/bus.py) on its own loop: every position sent."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        from realtime.layer import RedisChannelLayer

        self.layer = RedisChannelLayer(hosts=[redis_url], prefix=f"{prefix}:asgi")
        self.positions: list[tuple[int, int]] = []
        self.joined = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        from realtime.bus import shard_group

        channel = await self.layer.new_channel()
        await self.layer.group_add(shard_group(0), channel)
        self.joined.set()
        while not self.stopping.is_set():
            try:
                message = await asyncio.wait_for(self.layer.receive(channel), 0.5)
            except TimeoutError:
                continue
            for _user, items in message["events"]:
                self.positions.extend((item[1], item[2]) for item in items)
        await self.layer.group_discard(shard_group(0), channel)

    def __enter__(self) -> BusMember:
        self.thread.start()
        assert self.joined.wait(10), "the bus member never joined"
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        self.thread.join(10)


@contextlib.contextmanager
def slow_log_writes(seconds: float) -> Iterator[None]:
    """Every INSERT into the event log takes ``seconds`` more: a batch's transaction stays
    open long enough for the next one's to open beside it, so a kill finds both open."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE OR REPLACE FUNCTION taskstream_test_slow() RETURNS trigger AS $$
            BEGIN PERFORM pg_sleep({seconds:f}); RETURN NULL; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER taskstream_test_slow AFTER INSERT ON tasks_taskeventlog
                FOR EACH STATEMENT EXECUTE FUNCTION taskstream_test_slow();
            """
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER IF EXISTS taskstream_test_slow ON tasks_taskeventlog;"
                "DROP FUNCTION IF EXISTS taskstream_test_slow();"
            )


def open_transactions(database: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            " AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
            [database],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def test_killed_with_two_applies_open_a_restarted_consume_events_applies_and_sends_each_event_once(
    stack_env: dict[str, str], tmp_path: Path, django_user_model: type[User], run_id: str
) -> None:
    # Full batches of a backlog take turns: the next batch's transaction opens while the one
    # before is still running (realtime/applier.py). SIGKILL lands while two are open; both
    # die uncommitted, their offsets uncommitted too, and the restart must apply and send
    # every event exactly once.
    run = uuid.uuid4().hex[:8]
    topic, prefix = f"task.events.kill2.{run_id}.{run}", f"ts-test-kill2-{run}"
    ensure_topics([topic], partitions=3)
    group = f"taskstream-kill2-{run}"
    env = {
        **stack_env,
        "TASKSTREAM_TOPIC_EVENTS": topic,
        "TASKSTREAM_CONSUMER_GROUP": group,
        "TASKSTREAM_CONSUMER_INSTANCE_ID": "consume-events-kill2",
        "TASKSTREAM_REDIS_PREFIX": prefix,
        "TASKSTREAM_CONSUMER_BATCH": "100",
        "TASKSTREAM_LOG_RECORDS": "false",
    }
    tasks = {}
    for i in range(USERS):
        user = django_user_model.objects.create_user(f"kill2-{run}-{i}")
        tasks[user.pk] = AsyncTask.objects.create(owner=user, kind="demo")
    values = [
        (str(uid), event_value(user_id=uid, task_id=str(task.id), data={"progress": p}))
        for p in (n * 100 // EVENTS_PER_USER for n in range(1, EVENTS_PER_USER + 1))
        for uid, task in tasks.items()
    ]
    produce(topic, values)
    database = str(connection.settings_dict["NAME"])
    consumer = Proc("consume_events", ["manage.py", "consume_events"], env, tmp_path)
    with slow_log_writes(0.03), BusMember(stack_env["REDIS_URL"], prefix) as bus:
        consumer.start()
        try:
            wait_until(lambda: open_transactions(database) >= 2, 60, "two applies open at once")
            consumer.kill()
            logged_at_kill = set(
                TaskEventLog.objects.filter(source=topic).values_list("partition", "offset")
            )
            with group_reader(group) as reader:
                committed_at_kill = committed_offsets(reader, topic)
            consumer.start()
            wait_until(lambda: committed_to_the_end(group, topic), 60, "the backlog committed")
            wait_until(lambda: len(set(bus.positions)) >= len(values), 30, "every event on the bus")
        finally:
            consumer.stop()
    on_bus = collections.Counter(bus.positions)
    repeated = sorted(position for position, n in on_bus.items() if n > 1)
    print(
        f"killed with {len(logged_at_kill)} of {len(values)} events logged,"
        f" committed {committed_at_kill}; {len(repeated)} positions on the bus twice"
    )
    assert len(logged_at_kill) < len(values), "the kill came after the drain"
    positions = list(TaskEventLog.objects.filter(source=topic).values_list("partition", "offset"))
    assert len(positions) == len(set(positions)) == len(values)
    assert sorted(on_bus) == sorted(positions), "a position never on the bus"
    # The bus is at least once between a batch's push and its commit (realtime/ingest.py):
    # a batch pushed and not yet committed at the kill is read, and pushed, again, and the
    # streams drop what they sent already (realtime/writer.py). Only such a batch may repeat:
    # applied before the kill, its offsets uncommitted at it, pushed once by each process.
    assert all(on_bus[p] == 2 for p in repeated), "a position on the bus three times"
    assert all(offset >= committed_at_kill.get(partition, 0) for partition, offset in repeated), (
        "a position committed before the kill was pushed again"
    )
    assert set(repeated) <= logged_at_kill, "pushed twice, and not applied at the kill"
    for task in tasks.values():
        task.refresh_from_db()
        assert task.progress == 100, (task.id, task.progress)
