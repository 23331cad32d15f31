from __future__ import annotations

import json
import uuid

import pytest

from streaming.adapter import InvalidRecord, adapt
from streaming.events import Position
from tests.fakes import FakeMessage, event_value, record

TASK = str(uuid.uuid4())


def test_it_builds_an_event_with_its_kafka_position() -> None:
    value = event_value(user_id=7, task_id=TASK, data={"progress": 40, "message": "half"})
    event = adapt(record(value, offset=1042, partition=2))
    assert event.position == Position("task.events", 2, 1042)
    assert str(event.position) == "task.events:2:1042"
    assert event.user_id == 7
    assert event.task_id == TASK
    assert event.data == {"progress": 40, "message": "half"}
    assert event.envelope()["scope"] == "user"
    assert event.envelope()["version"] == 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "value is not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"event_type": "task.progress"}).encode(), "missing field(s): event_id"),
        (event_value(user_id=1, task_id=TASK, event_type="task.exploded"), "unknown event_type"),
        (event_value(user_id=1, task_id=TASK, version=2), "unsupported version"),
        (event_value(user_id=1, task_id=TASK, scope="global"), "unsupported scope"),
        (event_value(user_id="1", task_id=TASK), "user_id must be a positive integer"),
        (event_value(user_id=1, task_id="nope"), "task_id is not a UUID"),
        (event_value(user_id=1, task_id=TASK, event_id="x"), "event_id is not a UUID"),
        (event_value(user_id=1, task_id=TASK, occurred_at="yesterday"), "not ISO-8601"),
        (event_value(user_id=1, task_id=TASK, occurred_at="2026-01-01T00:00:00"), "no time zone"),
        (event_value(user_id=1, task_id=TASK, data={"progress": 101}), "data.progress"),
        (event_value(user_id=1, task_id=TASK, data=[]), "data must be a JSON object"),
        (event_value(user_id=1, task_id=TASK, event_type="task.failed", data={}), "data.error"),
    ],
)
def test_it_rejects_a_bad_record_with_a_reason(
    value: dict[str, object] | bytes, reason: str
) -> None:
    with pytest.raises(InvalidRecord) as caught:
        adapt(record(value, offset=0))
    assert reason in caught.value.reason


def test_a_key_that_names_another_user_is_rejected() -> None:
    value = event_value(user_id=1, task_id=TASK)
    with pytest.raises(InvalidRecord, match="does not match user_id"):
        adapt(record(value, offset=0, key=b"2"))


def test_an_empty_value_is_rejected() -> None:
    with pytest.raises(InvalidRecord, match="empty value"):
        adapt(FakeMessage("task.events", 0, 0, None))
