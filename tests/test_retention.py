"""History retention against real Kafka and PostgreSQL (tasks/retention.py): old rows go
only once no replay, redrive or relay can need them; what Kafka still holds keeps its rows,
so the delivery rule decides every record Kafka can still serve as before."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from streaming import conf
from streaming.adapter import adapt
from streaming.kafka import RangeReader, admin_config, ensure_topics, topic_epoch
from tasks.apply import apply_events
from tasks.delivery import deliverable
from tasks.models import AsyncTask, DeadLetter, OutboxMessage, TaskEventLog
from tasks.retention import HistoryPruner, KafkaHoldings, Pruned
from tests.conftest import Proc
from tests.fakes import event_value
from tests.kafka_helpers import delete_topics_named, produce, read_all
from tests.sse import wait_until
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.services, pytest.mark.django_db]

ROOT = Path(__file__).resolve().parent.parent


def BOOTSTRAP() -> str:
    return conf.get().require_kafka()


OLD = timedelta(days=40)  # past the default TASKSTREAM_HISTORY_DAYS (30)


@pytest.fixture
def topic(run_id: str) -> Iterator[str]:
    name = f"test.retention.{run_id}.{uuid.uuid4().hex[:8]}"
    ensure_topics([name], partitions=2)
    yield name
    delete_topics_named(name)


def cut(topic: str, partition: int, offset: int) -> None:
    """Retention, on demand: Kafka deletes the partition's records below ``offset``."""
    admin = AdminClient(admin_config())
    for future in admin.delete_records([TopicPartition(topic, partition, offset)]).values():
        future.result(30)


def age(rows: list[int], by: timedelta = OLD) -> None:
    TaskEventLog.objects.filter(pk__in=rows).update(applied_at=timezone.now() - by)


def log_row(task: AsyncTask, source: str, partition: int, offset: int, epoch: str) -> int:
    row = TaskEventLog.objects.create(
        task=task,
        event_id=uuid.uuid4(),
        event_type="task.progress",
        source=source,
        partition=partition,
        offset=offset,
        epoch=epoch,
        occurred_at=timezone.now(),
    )
    return row.pk


def positions() -> set[tuple[str, int, int, str]]:
    return set(TaskEventLog.objects.values_list("source", "partition", "offset", "epoch"))


def test_old_log_rows_go_once_kafka_no_longer_holds_their_records(topic: str, alice: User) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="report")
    # Nine real events, eight in partition 0 and one in partition 1, applied as
    # consume_events applies them.
    values = [
        event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": n}) for n in range(9)
    ]
    produce(topic, [(str(alice.pk), v) for v in values[:8]], partition=0)
    produce(topic, [(str(alice.pk), values[8])], partition=1)
    epoch = topic_epoch(topic)
    apply_events([adapt(r) for r in read_all(topic, BOOTSTRAP())], epoch=epoch)
    real = list(TaskEventLog.objects.values_list("pk", flat=True))
    assert len(real) == 9

    # Rows next to them: a blank epoch (logged before 0007) counts as the current epoch;
    # another epoch (the topic was re-created since) and a topic that no longer exists
    # hold nothing; partition 1 is not cut.
    kept_blank = log_row(task, topic, 0, 6, "")
    gone_blank = log_row(task, topic, 0, 2, "")
    old_epoch = [log_row(task, topic, 0, n, "OlderEpoch") for n in (1, 7, 500)]
    missing = log_row(task, f"{topic}.deleted", 0, 3, epoch)
    age([*real, kept_blank, gone_blank, *old_epoch, missing])
    young = log_row(task, topic, 0, 900, "OlderEpoch")  # gone from Kafka, but recent

    cut(topic, 0, 5)  # Kafka keeps offsets 5-7 of partition 0
    before = positions()
    assert HistoryPruner(KafkaHoldings(), chunk=4, dry_run=True).run_once() == Pruned(log=10)
    assert positions() == before
    pruned = HistoryPruner(KafkaHoldings(), chunk=4).run_once()

    assert pruned == Pruned(log=5 + 1 + 3 + 1)
    assert positions() == {
        *((topic, 0, n, epoch) for n in (5, 6, 7)),
        (topic, 0, 6, ""),
        (topic, 1, 0, epoch),
        (topic, 0, 900, "OlderEpoch"),
    }
    assert TaskEventLog.objects.filter(pk=young).exists()
    # What Kafka can still serve is decided exactly as before the pass: delivered.
    held = [adapt(r) for r in read_all(topic, BOOTSTRAP())]
    assert sorted((e.position.partition, e.position.offset) for e in held) == [
        (0, 5), (0, 6), (0, 7), (1, 0),
    ]  # fmt: skip
    assert deliverable(held, epoch) == [True] * 4
    # A second pass finds nothing more to do.
    assert HistoryPruner(KafkaHoldings()).run_once() == Pruned()


def test_a_topic_kafka_does_not_answer_for_keeps_every_row(alice: User, topic: str) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="report")
    rows = [log_row(task, topic, 0, n, "E") for n in range(3)]
    age(rows)
    dead = Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "retention-test"})
    holdings = KafkaHoldings(RangeReader("t", dead, timeout=1), timeout=1)
    pruned = HistoryPruner(holdings).run_once()
    holdings.close()
    assert pruned == Pruned(skipped=[topic])
    assert TaskEventLog.objects.count() == 3


def test_a_project_topic_the_cluster_does_not_list_keeps_its_rows(
    alice: User, settings: Any
) -> None:
    missing = f"test.retention.{uuid.uuid4().hex[:8]}.never-created"
    settings.TASKSTREAM = {**settings.TASKSTREAM, "TOPIC_EVENTS": missing}
    task = AsyncTask.objects.create(owner=alice, kind="report")
    age([log_row(task, missing, 0, 1, "E"), log_row(task, f"{missing}.old", 0, 1, "E")])
    pruned = HistoryPruner(KafkaHoldings()).run_once()
    # The events topic's row waits for Kafka to answer; another topic's is gone.
    assert pruned == Pruned(log=1, skipped=[missing])
    assert positions() == {(missing, 0, 1, "E")}


def test_dead_letter_ledger_rows_go_once_the_dead_letter_topic_dropped_them(topic: str) -> None:
    old = timezone.now() - OLD

    def letter(partition: int, offset: int, dead_at: datetime) -> None:
        DeadLetter.objects.create(
            dlq_topic=topic, dlq_partition=partition, dlq_offset=offset, dead_at=dead_at,
            reason="unknown task",
        )  # fmt: skip

    # Four records in partition 0; Kafka then drops the first two.
    produce(topic, [("k", b"{}")] * 4, partition=0)
    for n in range(4):
        letter(0, n, old)
    letter(0, 1 + 10_000, timezone.now())  # young: kept whatever Kafka holds
    # Past the topic's end: a record of the topic before it was re-created.
    letter(0, 4, old)
    cut(topic, 0, 2)

    assert HistoryPruner(KafkaHoldings()).run_once() == Pruned(dead_letters=3)
    assert sorted(DeadLetter.objects.values_list("dlq_offset", flat=True)) == [2, 3, 10_001]


def test_outbox_rows_go_once_sent_or_their_failure_is_reported() -> None:
    now, old = timezone.now(), timezone.now() - OLD

    def row(label: str, **fields: object) -> None:
        OutboxMessage.objects.create(topic="task.requests", key="1", value={"l": label}, **fields)

    row("sent long ago", sent_at=old)
    row("sent today", sent_at=now)
    row("pending", next_attempt_at=old)
    row("failed, its task.failed owed", failed_at=old, failure_event_id=uuid.uuid4())
    row(
        "failed and reported", failed_at=old, failure_event_id=uuid.uuid4(), failure_reported_at=old
    )
    row("failed, nothing owed", failed_at=old)

    pruned = HistoryPruner(lambda topic: None, chunk=2).run_once()

    assert pruned == Pruned(outbox=3)
    left = sorted(v["l"] for v in OutboxMessage.objects.values_list("value", flat=True))
    assert left == ["failed, its task.failed owed", "pending", "sent today"]


def test_the_command_runs_a_pass_and_refuses_a_bad_interval(alice: User, topic: str) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="report")
    age([log_row(task, f"{topic}.deleted", 0, 1, "E")])
    out = io.StringIO()
    call_command("prune_history", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "would prune 1 event-log rows, 0 dead letters, 0 outbox rows"
    assert TaskEventLog.objects.count() == 1
    out = io.StringIO()
    call_command("prune_history", stdout=out)
    assert out.getvalue().strip() == "pruned 1 event-log rows, 0 dead letters, 0 outbox rows"
    assert TaskEventLog.objects.count() == 0
    with pytest.raises(CommandError, match="--dry-run is one pass"):
        call_command("prune_history", "--dry-run", "--every", "60")
    for bad in ("nan", "inf", "-1"):
        with pytest.raises(CommandError, match="--every"):
            call_command("prune_history", "--every", bad)


@pytest.mark.django_db(transaction=True)
def test_the_loop_outlives_a_postgresql_outage(
    stack_env: dict[str, str], tmp_path: Path, alice: User
) -> None:
    db = django_settings.DATABASES["default"]
    proxy = TcpProxy(str(db["HOST"]), int(db["PORT"]))
    env = dict(stack_env)
    env["DATABASE_URL"] = (
        f"postgres://{db['USER']}:{db['PASSWORD']}@127.0.0.1:{proxy.port}/{db['NAME']}"
    )
    proc = Proc("prune_history", ["manage.py", "prune_history", "--every", "0.2"], env, tmp_path)
    try:
        proc.start().wait_log("history pruned")
        proxy.cut()
        proc.wait_log("PostgreSQL unreachable")
        task = AsyncTask.objects.create(owner=alice, kind="report")
        age([log_row(task, "test.retention.deleted-topic", 0, 1, "E")])
        proxy.restore()
        wait_until(lambda: not TaskEventLog.objects.exists(), 30, "the row pruned after the outage")
    finally:
        assert proc.stop() == 0
        proxy.close()


def test_the_loop_stops_on_sigterm(stack_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "prune_history", "--every", "3600"],
        cwd=ROOT, env=stack_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the first pass is done
    assert first.startswith("pruned "), first + proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
