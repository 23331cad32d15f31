"""Applying events to task state: idempotent by position and event id, monotonic."""

from __future__ import annotations

import importlib
import uuid
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import User
from django.db import connection

from streaming.adapter import adapt
from streaming.cursor import UNKNOWN_EPOCH, parse
from streaming.events import TaskEvent
from tasks.apply import Outcome, apply_events
from tasks.delivery import deliverable
from tasks.models import AsyncTask, TaskEventLog, TaskStatus
from tests.fakes import event_value, record

pytestmark = pytest.mark.django_db


def make_event(task: AsyncTask, offset: int, **kwargs: Any) -> TaskEvent:
    value = event_value(user_id=task.owner_id, task_id=str(task.id), **kwargs)
    return adapt(record(value, offset=offset))


def test_a_run_of_events_moves_the_task_to_its_final_state(alice: User) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    events = [
        make_event(task, 0, event_type="task.started", data={}),
        make_event(task, 1, data={"progress": 50, "message": "half"}),
        make_event(task, 2, event_type="task.succeeded", data={"result": {"n": 1}}),
    ]
    outcomes = [a.outcome for a in apply_events(events)]
    assert outcomes == [Outcome.APPLIED] * 3
    task.refresh_from_db()
    assert task.status == TaskStatus.SUCCEEDED
    assert task.progress == 100
    assert task.result == {"n": 1}
    assert task.started_at is not None and task.finished_at is not None
    # No epoch given: the id still parses as a cursor (an unknown epoch; resuming from it
    # gets an explicit epoch-changed reset).
    assert task.last_event_id == f"task.events:0:2@{UNKNOWN_EPOCH}"
    assert str(parse(task.last_event_id)) == task.last_event_id
    assert TaskEventLog.objects.filter(task=task).count() == 3


def test_a_record_delivered_twice_changes_the_task_once(alice: User) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    event = make_event(task, 5, data={"progress": 30, "message": "x"})
    [first] = apply_events([event])
    task.refresh_from_db()
    updated_at = task.updated_at
    [second] = apply_events([event])
    assert first.outcome is Outcome.APPLIED
    # Same position again: a consumer restart. It changes nothing, but is still delivered
    # (the first push may never have happened); streams drop positions already sent.
    assert second.outcome is Outcome.REDELIVERED
    assert second.deliver
    task.refresh_from_db()
    assert task.updated_at == updated_at
    assert TaskEventLog.objects.filter(task=task).count() == 1


def test_the_same_event_id_at_a_new_position_is_a_duplicate(alice: User) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    event_id = str(uuid.uuid4())
    first = make_event(task, 1, event_id=event_id, data={"progress": 10})
    retry = make_event(task, 2, event_id=event_id, data={"progress": 10})
    results = apply_events([first, retry])
    assert [(a.outcome, a.deliver) for a in results] == [
        (Outcome.APPLIED, True),
        (Outcome.DUPLICATE, False),
    ]


def test_an_older_event_changes_nothing(alice: User) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    apply_events([make_event(task, 10, data={"progress": 80})])
    [late] = apply_events([make_event(task, 9, data={"progress": 20})])
    assert late.outcome is Outcome.STALE
    task.refresh_from_db()
    assert task.progress == 80


def test_a_final_state_is_final(alice: User) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    apply_events([make_event(task, 1, event_type="task.failed", data={"error": "boom"})])
    [after] = apply_events([make_event(task, 2, data={"progress": 99})])
    assert after.outcome is Outcome.STALE
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert task.error == "boom"


def test_unknown_user_unknown_task_and_wrong_owner_are_rejected(alice: User, bob: User) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    ghost_user = adapt(record(event_value(user_id=999999, task_id=str(task.id)), offset=1))
    ghost_task = adapt(record(event_value(user_id=alice.pk, task_id=str(uuid.uuid4())), offset=2))
    wrong_owner = adapt(record(event_value(user_id=bob.pk, task_id=str(task.id)), offset=3))
    results = apply_events([ghost_user, ghost_task, wrong_owner])
    assert [(a.outcome, a.reason) for a in results] == [
        (Outcome.REJECTED, "unknown user"),
        (Outcome.REJECTED, "unknown task"),
        (Outcome.REJECTED, "task belongs to another user"),
    ]
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING
    assert not TaskEventLog.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_values_reach_the_database_exactly_in_the_batch_transaction_of_its_own(
    alice: User,
) -> None:
    """The rows travel to PostgreSQL as one JSON text (tasks.postgres): what is stored is
    what was sent, including what JSON text could bend (quotes, backslashes, non-ASCII,
    the largest 64-bit integer, nested nulls), and a null result is SQL NULL. Run outside
    any caller's transaction, so the batch begins and commits its own."""
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    tricky = {"progress": 40, "message": 'it\'s "quoted" \\ back\\slash ünï 🚀', "n": 2**63 - 1}
    events = [
        make_event(task, 0, event_type="task.started", data={"nested": [None, {"a": None}]}),
        make_event(task, 1, data=tricky),
        make_event(task, 2, event_type="task.succeeded", data={"result": None}),
    ]
    assert [a.outcome for a in apply_events(events)] == [Outcome.APPLIED] * 3
    task.refresh_from_db()
    assert task.message == tricky["message"]
    assert task.status == TaskStatus.SUCCEEDED
    assert AsyncTask.objects.filter(pk=task.pk, result__isnull=True).exists()
    logged = {row.offset: row.data for row in TaskEventLog.objects.filter(task=task)}
    assert logged == {0: {"nested": [None, {"a": None}]}, 1: tricky, 2: {"result": None}}


def test_a_batch_holding_logged_events_is_decided_again_with_the_log(alice: User) -> None:
    """Inside a caller's transaction (a savepoint): see the test below."""
    _logged_events_are_decided_again(alice)


@pytest.mark.django_db(transaction=True)
def test_a_batch_holding_logged_events_is_decided_again_in_its_own_transaction(
    alice: User,
) -> None:
    """The first try assumes a new batch and skips reading the log; a re-read batch (after a
    crash) and a producer's retry fail its INSERT on a unique index, and the batch is
    decided again with the log: nothing of the first try stays, the new events apply once."""
    _logged_events_are_decided_again(alice)


def _logged_events_are_decided_again(alice: User) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    seen = make_event(task, 3, data={"progress": 10})
    assert [a.outcome for a in apply_events([seen])] == [Outcome.APPLIED]
    retried = make_event(task, 4, event_id=seen.event_id, data={"progress": 10})
    fresh = make_event(task, 5, data={"progress": 60, "message": "later"})
    results = apply_events([seen, retried, fresh])
    assert [(a.outcome, a.deliver) for a in results] == [
        (Outcome.REDELIVERED, True),
        (Outcome.DUPLICATE, False),
        (Outcome.APPLIED, True),
    ]
    task.refresh_from_db()
    assert (task.progress, task.message, task.last_event_offset) == (60, "later", 5)
    assert sorted(TaskEventLog.objects.filter(task=task).values_list("offset", flat=True)) == [
        3,
        5,
    ]


def test_a_re_created_topics_records_apply_at_offsets_the_old_topic_used(alice: User) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    old = [make_event(task, n, data={"progress": 10 * n, "message": ""}) for n in range(3)]
    assert [a.outcome for a in apply_events(old, epoch="OldTopic")] == [Outcome.APPLIED] * 3
    # The topic is deleted and created again: a new epoch, and offsets from 0 again.
    other = AsyncTask.objects.create(owner=alice, kind="demo")
    new = [
        make_event(other, 0, event_type="task.started", data={}),
        make_event(other, 1, data={"progress": 40, "message": ""}),
        make_event(task, 2, data={"progress": 50, "message": ""}),
    ]
    results = apply_events(new, epoch="NewTopic")
    assert [(a.outcome, a.reason) for a in results] == [(Outcome.APPLIED, "")] * 3
    assert all(a.deliver for a in results)
    task.refresh_from_db()
    assert task.progress == 50
    assert task.last_event_id == "task.events:0:2@NewTopic"
    assert sorted(TaskEventLog.objects.values_list("offset", "epoch")) == [
        (0, "NewTopic"),
        (0, "OldTopic"),
        (1, "NewTopic"),
        (1, "OldTopic"),
        (2, "NewTopic"),
        (2, "OldTopic"),
    ]
    # Read again (a restart before the commit): redelivered, at the new topic's positions.
    again = apply_events(new, epoch="NewTopic")
    assert [(a.outcome, a.deliver) for a in again] == [(Outcome.REDELIVERED, True)] * 3
    # Each topic's records are delivered in their own epoch only: a Kafka replay reading
    # one topic never sends what the log holds for the other at the same offsets.
    assert deliverable(new, "NewTopic") == [True] * 3
    assert deliverable(new, "OldTopic") == [False] * 3
    assert deliverable(old, "OldTopic") == [True] * 3
    # Within the new topic, offsets order the task's events again.
    ahead = make_event(task, 5, data={"progress": 60, "message": ""})
    behind = make_event(task, 4, data={"progress": 55, "message": ""})
    outcomes = [a.outcome for a in apply_events([ahead, behind], "NewTopic")]
    assert outcomes == [Outcome.APPLIED, Outcome.STALE]


def test_a_log_row_from_before_epochs_were_recorded_matches_its_position_in_any_epoch(
    alice: User,
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    first = make_event(task, 0, data={"progress": 10, "message": ""})
    apply_events([first], epoch="")  # as logged before tasks/migrations/0007, task unknown
    assert TaskEventLog.objects.get().epoch == ""
    (again,) = apply_events([first], epoch="TheTopic")
    assert (again.outcome, again.deliver) == (Outcome.REDELIVERED, True)
    assert deliverable([first], "TheTopic") == [True]


def test_the_migration_gives_old_log_rows_their_tasks_epoch_where_the_task_knows_it(
    alice: User,
) -> None:
    backfill = importlib.import_module("tasks.migrations.0007_event_log_epoch")._backfill
    known = AsyncTask.objects.create(owner=alice, kind="demo")
    unknown = AsyncTask.objects.create(owner=alice, kind="demo")
    apply_events([make_event(known, 0, data={"progress": 1, "message": ""})], epoch="")
    apply_events([make_event(unknown, 1, data={"progress": 1, "message": ""})], epoch="")
    AsyncTask.objects.filter(pk=known.pk).update(last_event_epoch="TheTopic")
    backfill(django_apps, None)
    assert dict(TaskEventLog.objects.values_list("task_id", "epoch")) == {
        known.pk: "TheTopic",
        unknown.pk: "",
    }


def test_the_previous_releases_insert_without_the_epoch_still_works(alice: User) -> None:
    # During a rollout the old consume_events (before migration 0007) inserts log rows
    # without the column: the database's default fills it, and the rule matches it.
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    event = make_event(task, 0, data={"progress": 1, "message": ""})
    table = TaskEventLog._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (task_id, event_id, event_type, source, partition, "
            '"offset", occurred_at, data, applied_at, changed_task) '
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                # 32 hex digits: a UUID both PostgreSQL and SQLite's column read
                task.pk.hex,
                uuid.UUID(event.event_id).hex,
                event.event_type,
                "task.events",
                0,
                0,
                event.occurred_at,
                "{}",
                event.occurred_at,
                True,
            ],
        )
    assert TaskEventLog.objects.get().epoch == ""
    assert deliverable([event], "TheTopic") == [True]
