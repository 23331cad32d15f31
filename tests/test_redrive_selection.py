"""Choosing and checking dead letters (tasks/redrive.py) without Kafka: the filters, the
ledger, the fix-up, and the check that skips a record the consumer would refuse again."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User

from tasks.models import AsyncTask, DeadLetter
from tasks.redrive import DeadLetterRedrive, Letter, Selection
from tests.fakes import FakeProducer, event_value

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def letter(
    body: Any,
    *,
    offset: int = 0,
    reason: str = "unknown task",
    key: Any = None,
    dead_at: datetime = T0,
) -> Letter:
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    if key is None and isinstance(body, dict):
        key = str(body["user_id"]).encode()
    return Letter(
        0,
        offset,
        dead_at,
        reason,
        "task.events",
        1,
        40 + offset,
        key,
        value,
        body if isinstance(body, dict) else None,
    )


class NoReader:
    def close(self) -> None:
        pass


def redrive(producer: FakeProducer | None = None) -> DeadLetterRedrive:
    return DeadLetterRedrive(
        reader=NoReader(),  # type: ignore[arg-type]
        producer=producer or FakeProducer(),
        topic="task.events.dlq",
        events_topic="task.events",
    )


def test_filters_by_reason_task_user_time_and_position() -> None:
    task = str(uuid.uuid4())
    a = letter(event_value(user_id=7, task_id=task), offset=0, reason="unknown task")
    b = letter(
        event_value(user_id=8, task_id=str(uuid.uuid4())),
        offset=1,
        reason="key '7' does not match user_id 8",
        dead_at=T0 + timedelta(hours=1),
    )
    c = letter(b"{not json", offset=2, reason="value is not JSON", key=b"7")
    everything = [a, b, c]

    def chosen(selection: Selection) -> list[int]:
        return [x.offset for x in everything if selection.matches(x, redriven=False)]

    assert chosen(Selection()) == [0, 1, 2]
    assert chosen(Selection(reason="UNKNOWN")) == [0]
    assert chosen(Selection(task=task.upper())) == [0]
    assert chosen(Selection(user=8)) == [1]
    assert chosen(Selection(since=T0 + timedelta(minutes=1))) == [1]
    assert chosen(Selection(until=T0 + timedelta(minutes=1))) == [0, 2]
    assert chosen(Selection(positions=frozenset({"0:2"}))) == [2]
    assert not Selection().matches(a, redriven=True)
    assert Selection(again=True).matches(a, redriven=True)


@pytest.mark.django_db
def test_only_records_the_consumer_would_accept_are_republished(alice: User, bob: User) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="report")
    unknown = str(uuid.uuid4())
    good = letter(event_value(user_id=alice.pk, task_id=str(task.id)), offset=0)
    letters = [
        good,
        letter(event_value(user_id=alice.pk, task_id=unknown), offset=1),
        letter(event_value(user_id=bob.pk, task_id=str(task.id)), offset=2),
        letter(b"{not json", offset=3, key=b"1"),
        letter(event_value(user_id=alice.pk, task_id=str(task.id)), offset=4, key=b"999"),
    ]
    for x in letters:
        DeadLetter.objects.create(
            dlq_topic="task.events.dlq",
            dlq_partition=0,
            dlq_offset=x.offset,
            dead_at=T0,
            reason=x.reason,
        )
    producer = FakeProducer()
    outcomes = redrive(producer).redrive(letters)
    assert [(o.action, o.detail) for o in outcomes] == [
        ("redriven", ""),
        ("skipped", f"task {unknown} still unknown"),
        ("skipped", f"task {task.id} belongs to another user"),
        ("skipped", outcomes[3].detail),
        ("skipped", f"still invalid: key '999' does not match user_id {alice.pk}"),
    ]
    assert outcomes[3].detail.startswith("still invalid: not valid JSON")
    (sent,) = producer.produced
    assert (sent["topic"], sent["key"], sent["value"]) == ("task.events", good.key, good.value)
    assert sent["headers"] == [("redriven-from", "task.events.dlq:0:0")]
    row = DeadLetter.objects.get(dlq_offset=0)
    assert row.redrive_count == 1 and row.redriven_at is not None
    assert DeadLetter.objects.filter(redriven_at__isnull=False).count() == 1
    # Already redriven: a second selection without --again leaves it out.
    assert redrive().select(letters, Selection()) == letters[1:]


@pytest.mark.django_db
def test_a_fixup_is_merged_into_the_value_and_the_key_follows_the_user(
    alice: User, bob: User
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="report")
    body = event_value(user_id=bob.pk, task_id=str(task.id), data={"progress": 5, "message": "m"})
    producer = FakeProducer()
    outcomes = redrive(producer).redrive(
        [letter(body)], {"user_id": alice.pk, "data": {"progress": 50}}, dry_run=True
    )
    assert [o.action for o in outcomes] == ["would redrive"]
    assert producer.produced == []  # a dry run publishes nothing
    redrive(producer).redrive([letter(body)], {"user_id": alice.pk, "data": {"progress": 50}})
    (sent,) = producer.produced
    value = json.loads(sent["value"])
    assert sent["key"] == str(alice.pk).encode()
    assert value["data"] == {"progress": 50, "message": "m"}
    assert value["event_id"] == body["event_id"]  # the same event: a repeat is a duplicate
