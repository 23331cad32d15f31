"""Dead-letter redrive against the real services (#12): a record dead-lettered because its
task did not exist yet is redriven once the task exists, and reaches its owner once, however
many times it is redriven. The admin counts dead letters per reason."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from confluent_kafka.admin import AdminClient
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from streaming import conf
from streaming.kafka import admin_config, ensure_topics, topic_epoch
from tasks.models import AsyncTask, DeadLetter, TaskEventLog
from tasks.redrive import DeadLetterRedrive, Letter, Selection
from tests.conftest import Stack, open_stream
from tests.fakes import event_value
from tests.kafka_helpers import produce, recreate
from tests.sse import StreamReader, wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def copies(reader: StreamReader, event_id: str) -> int:
    return sum(json.loads(e.data)["event_id"] == event_id for e in reader.of_type("task."))


def test_a_record_for_an_unknown_task_is_redriven_once_the_task_exists_and_arrives_once(
    stack: Stack, alice: User, streams: list[StreamReader]
) -> None:
    stream = open_stream(stack, alice)
    streams.append(stream)
    task_id = str(uuid.uuid4())
    early = event_value(user_id=alice.pk, task_id=task_id, data={"progress": 40})
    produce(conf.get().TOPIC_EVENTS, [(str(alice.pk), early)])

    redrive = DeadLetterRedrive()
    mine = Selection(task=task_id)

    def dead_lettered() -> list[Letter]:
        return redrive.select(redrive.read(), mine)

    (letter,) = wait_until(dead_lettered, 60, "the record to be dead-lettered")
    assert letter.reason == "unknown task"
    assert letter.source == conf.get().TOPIC_EVENTS and letter.source_offset is not None
    # The task does not exist yet: redriving would only dead-letter it again.
    (outcome,) = redrive.redrive([letter])
    assert (outcome.action, outcome.detail) == ("skipped", f"task {task_id} still unknown")

    AsyncTask.objects.create(id=task_id, owner=alice, kind="report")
    (outcome,) = redrive.redrive(dead_lettered(), dry_run=True)
    assert outcome.action == "would redrive"
    out = io.StringIO()
    call_command("redrive_dead_letters", "--task", task_id, stdout=out, stderr=io.StringIO())
    assert "-> redriven" in out.getvalue()
    assert f"from {letter.source_position}" in out.getvalue()
    stream.wait_for(lambda r: copies(r, early["event_id"]) == 1, 60)

    # Twice: the ledger chooses nothing; forced (--again), the consumer sees a duplicate id.
    assert dead_lettered() == []
    again = redrive.select(redrive.read(), Selection(task=task_id, again=True))
    assert [o.action for o in redrive.redrive(again)] == ["redriven"]
    later = event_value(user_id=alice.pk, task_id=task_id, data={"progress": 60})
    produce(conf.get().TOPIC_EVENTS, [(str(alice.pk), later)])
    stream.wait_for(lambda r: copies(r, later["event_id"]) == 1, 60)
    assert copies(stream, early["event_id"]) == 1
    # Not under another id either: the task's 40% reached the stream once.
    forty = [
        e for e in stream.of_type("task.progress") if json.loads(e.data)["data"] == {"progress": 40}
    ]
    assert [json.loads(e.data)["task_id"] for e in forty] == [task_id]
    assert TaskEventLog.objects.filter(event_id=early["event_id"]).count() == 1
    assert AsyncTask.objects.get(id=task_id).progress == 60
    row = DeadLetter.objects.get(task_id=task_id)
    assert row.redrive_count == 2 and row.redriven_at is not None
    redrive.close()


def test_a_fixup_repairs_a_record_and_the_admin_counts_reasons(
    stack: Stack, alice: User, bob: User, streams: list[StreamReader], client: Client
) -> None:
    stream = open_stream(stack, alice)
    streams.append(stream)
    task = AsyncTask.objects.create(owner=alice, kind="report")
    # Sent with bob's id: "task belongs to another user".
    wrong = event_value(user_id=bob.pk, task_id=str(task.id), data={"progress": 30})
    produce(conf.get().TOPIC_EVENTS, [(str(bob.pk), wrong)])
    redrive = DeadLetterRedrive()
    mine = Selection(task=str(task.id))
    (letter,) = wait_until(lambda: redrive.select(redrive.read(), mine), 60, "the dead letter")
    assert letter.reason == "task belongs to another user"

    out = io.StringIO()
    call_command(
        "redrive_dead_letters",
        "--position",
        letter.position,
        "--fixup",
        json.dumps({"user_id": alice.pk}),
        stdout=out,
        stderr=io.StringIO(),
    )
    assert "-> redriven" in out.getvalue()
    stream.wait_for(lambda r: copies(r, wrong["event_id"]) == 1, 60)
    assert AsyncTask.objects.get(id=task.id).progress == 30

    client.force_login(User.objects.create_superuser("admin", password="admin-password"))
    page = client.get("/admin/tasks/deadletter/").content.decode()
    assert "Dead letters per reason" in page
    counts = DeadLetter.objects.filter(reason="task belongs to another user").count()
    assert f"<td>task belongs to another user</td><td>{counts}</td>" in page
    redrive.close()


def test_a_re_created_dead_letter_topics_records_replace_the_old_ledger_rows(
    stack: Stack, run_id: str
) -> None:
    """Deleting and creating the dead-letter topic again (a purge) restarts its offsets: a
    new record at an offset an old, redriven one had is recorded as itself, not redriven."""
    topic = f"test.dlq.recreated.{run_id}.{uuid.uuid4().hex[:8]}"
    ensure_topics([topic], partitions=1)
    redrive = DeadLetterRedrive(topic=topic)
    try:

        def dead_letter(reason: str) -> None:
            produce(topic, [("k", b"{}")], headers=[("reason", reason.encode())])

        dead_letter("unknown task")
        (old,) = redrive.read()
        DeadLetter.objects.filter(dlq_topic=topic).update(redriven_at=timezone.now())
        assert redrive.redriven() == {"0:0"}

        recreate(topic, topic_epoch(topic), partitions=1)
        dead_letter("unknown user")
        (new,) = redrive.read()

        assert new.position == old.position == "0:0"
        row = DeadLetter.objects.get(dlq_topic=topic)
        assert (row.reason, row.redriven_at, row.redrive_count) == ("unknown user", None, 0)
        assert redrive.redriven() == set()
        assert redrive.select([new], Selection()) == [new]
        # Read again, the same record is the same row: nothing replaced.
        redrive.read()
        assert DeadLetter.objects.get(dlq_topic=topic).pk == row.pk
    finally:
        redrive.close()
        AdminClient(admin_config()).delete_topics([topic])
