"""The event adapter: a pure function from a Kafka record to a ``TaskEvent``.

It does no I/O. Anything it cannot turn into a valid event raises ``InvalidRecord`` with a
reason; the consumer sends such records to the dead-letter topic and goes on.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Protocol

from streaming.events import EVENT_TYPES, SCHEMA_VERSION, SCOPE_USER, Position, TaskEvent


class InvalidRecord(Exception):
    """A record that can never become an event (poison); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Record(Protocol):
    """The part of ``confluent_kafka.Message`` the adapter reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> str | bytes | None: ...
    def value(self) -> str | bytes | None: ...


REQUIRED_FIELDS = (
    "event_id",
    "event_type",
    "version",
    "occurred_at",
    "user_id",
    "task_id",
    "scope",
    "data",
)


def adapt(record: Record) -> TaskEvent:
    """Validate ``record`` and return the event it carries."""
    topic, partition, offset = record.topic(), record.partition(), record.offset()
    if topic is None or partition is None or offset is None or offset < 0:
        raise InvalidRecord("record has no position")
    raw = record.value()
    if raw is None:
        raise InvalidRecord("empty value")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRecord(f"value is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRecord("value is not a JSON object")
    missing = [name for name in REQUIRED_FIELDS if name not in body]
    if missing:
        raise InvalidRecord(f"missing field(s): {', '.join(missing)}")

    event_type = body["event_type"]
    if event_type not in EVENT_TYPES:
        raise InvalidRecord(f"unknown event_type {event_type!r}")
    version = body["version"]
    if type(version) is not int or version != SCHEMA_VERSION:
        raise InvalidRecord(f"unsupported version {version!r} (supported: {SCHEMA_VERSION})")
    if body["scope"] != SCOPE_USER:
        raise InvalidRecord(f"unsupported scope {body['scope']!r} (supported: {SCOPE_USER!r})")
    user_id = body["user_id"]
    if type(user_id) is not int or user_id <= 0:
        raise InvalidRecord(f"user_id must be a positive integer, got {user_id!r}")
    key = record.key()
    if key is not None:
        key_text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if key_text != str(user_id):
            # The key decides the partition; a record keyed to someone else would sit in
            # another user's partition and break exact resume for both.
            raise InvalidRecord(f"key {key_text!r} does not match user_id {user_id}")
    occurred_at = _parse_time(body["occurred_at"])
    data = body["data"]
    if not isinstance(data, dict):
        raise InvalidRecord("data must be a JSON object")
    _check_data(event_type, data)

    return TaskEvent(
        event_id=_uuid(body["event_id"], "event_id"),
        event_type=event_type,
        version=version,
        occurred_at=occurred_at,
        user_id=user_id,
        task_id=_uuid(body["task_id"], "task_id"),
        scope=SCOPE_USER,
        data=data,
        position=Position(topic, partition, offset),
    )


def _uuid(value: Any, name: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidRecord(f"{name} is not a UUID: {value!r}") from None


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise InvalidRecord(f"occurred_at is not an ISO-8601 string: {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRecord(f"occurred_at is not ISO-8601: {value!r}") from None
    if parsed.tzinfo is None:
        raise InvalidRecord(f"occurred_at has no time zone: {value!r}")
    return parsed


def _check_data(event_type: str, data: dict[str, Any]) -> None:
    if event_type == "task.progress":
        progress = data.get("progress")
        if type(progress) is not int or not 0 <= progress <= 100:
            raise InvalidRecord(f"data.progress must be an integer 0-100, got {progress!r}")
        if not isinstance(data.get("message", ""), str):
            raise InvalidRecord("data.message must be a string")
    elif event_type == "task.failed" and not isinstance(data.get("error"), str):
        raise InvalidRecord("data.error must be a string")
    elif event_type == "task.cancelled" and not isinstance(data.get("reason", ""), str):
        raise InvalidRecord("data.reason must be a string")
