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


NESTED: dict[str, object] = {}
_inner = NESTED
for _ in range(40):
    _inner["x"] = {}
    _inner = _inner["x"]  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"event_type": "task.progress"}).encode(), "event_id: Field required"),
        (event_value(user_id=1, task_id=TASK, event_type="task.exploded"), "unknown event type"),
        (event_value(user_id=1, task_id=TASK, version=2), "version: Input should be 1"),
        (event_value(user_id=1, task_id=TASK, scope="global"), "scope: Input should be 'user'"),
        (event_value(user_id="1", task_id=TASK), "user_id: Input should be a valid integer"),
        (event_value(user_id=True, task_id=TASK), "user_id: Input should be a valid integer"),
        (event_value(user_id=0, task_id=TASK), "user_id: Input should be greater than 0"),
        (event_value(user_id=2**40, task_id=TASK), "user_id: Input should be less than"),
        (event_value(user_id=1, task_id="nope"), "task_id: Input should be a valid UUID"),
        (event_value(user_id=1, task_id=TASK, event_id="x"), "event_id: Input should be a valid"),
        (event_value(user_id=1, task_id=TASK, occurred_at="yesterday"), "occurred_at: Input"),
        (event_value(user_id=1, task_id=TASK, occurred_at="2026-01-01T00:00:00"), "timezone"),
        (event_value(user_id=1, task_id=TASK, data={"progress": 101}), "data.progress"),
        (event_value(user_id=1, task_id=TASK, data={"progress": 1.5}), "data.progress"),
        (event_value(user_id=1, task_id=TASK, data=[]), "data: Input should be a valid"),
        (event_value(user_id=1, task_id=TASK, event_type="task.failed", data={}), "data.error"),
        # Hostile input: each of these stopped consume_events before (issue #8).
        (event_value(user_id=1, task_id=TASK, event_type=5), "event_type: unknown event type"),
        (event_value(user_id=1, task_id=TASK, event_type=["x"]), "event_type: unknown event type"),
        (event_value(user_id=1, task_id=TASK, event_type={"a": 1}), "event_type: unknown"),
        (
            json.dumps(event_value(user_id=1, task_id=TASK, data={"progress": 1, "v": 1}))
            .replace('"v": 1', '"v": NaN')
            .encode(),
            "not valid JSON",
        ),
        (
            json.dumps(event_value(user_id=1, task_id=TASK, data={"progress": 1, "v": 1}))
            .replace('"v": 1', '"v": 1e999')
            .encode(),
            "not valid JSON",
        ),
        (
            event_value(user_id=1, task_id=TASK, data={"progress": 1, "message": "a\x00b"}),
            "data.message: a string contains a NUL character",
        ),
        (
            json.dumps(event_value(user_id=1, task_id=TASK, data={"progress": 1, "message": "m"}))
            .replace('"m"', '"\\ud800"')
            .encode(),
            "not valid JSON",
        ),
        (
            event_value(user_id=1, task_id=TASK, data={"progress": 1, "\x00key": 1}),
            "a key contains a NUL character",
        ),
        (
            event_value(
                user_id=1, task_id=TASK, event_type="task.succeeded", data={"result": NESTED}
            ),
            "nested deeper than",
        ),
        (b"[" * 150_000 + b"]" * 150_000, "value is 300000 bytes, over the 262144-byte limit"),
        (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
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


def test_a_record_without_a_key_is_rejected() -> None:
    # docs/events.md: the key is required (it decides the user's partition).
    value = json.dumps(event_value(user_id=1, task_id=TASK)).encode()
    with pytest.raises(InvalidRecord, match="no key"):
        adapt(FakeMessage("task.events", 0, 0, value, None))


def test_extra_data_fields_are_delivered_as_sent() -> None:
    data = {"progress": 5, "step": "download", "detail": {"bytes": 10}}
    event = adapt(record(event_value(user_id=3, task_id=TASK, data=data), offset=0))
    assert event.data == data
