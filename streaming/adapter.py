"""The event adapter: a pure function from a Kafka record to a ``TaskEvent``.

It does no I/O. It accepts only what the database, the channel layer and a browser can
all hold (``streaming.jsonsafe``) and what the event contract allows
(``streaming.schema``): anything else raises ``InvalidRecord`` with a reason, and the
consumer sends the record to the dead-letter topic and goes on.
"""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

from pydantic import ValidationError

from streaming import conf, jsonsafe, tracecontext
from streaming.events import SCHEMA_VERSION, SCOPE_USER, Position, TaskEvent
from streaming.schema import RECORD


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
    def headers(self) -> Any: ...  # a list of (name, value) pairs, or None


def adapt(record: Record) -> TaskEvent:
    """Validate ``record`` and return the event it carries."""
    topic, partition, offset = record.topic(), record.partition(), record.offset()
    if topic is None or partition is None or offset is None or offset < 0:
        raise InvalidRecord("record has no position")
    raw = record.value()
    if raw is None:
        raise InvalidRecord("empty value")
    limit = conf.get().MAX_EVENT_BYTES
    if len(raw) > limit:
        raise InvalidRecord(f"value is {len(raw)} bytes, over the {limit}-byte limit")
    try:
        body = jsonsafe.loads(raw)
    except jsonsafe.UnsafeJSON as exc:
        raise InvalidRecord(f"{exc.path}: {exc.problem}" if exc.path else exc.problem) from None
    if not isinstance(body, dict):
        raise InvalidRecord("value is not a JSON object")
    # The trace context travels in the record's header; one in the value is not trusted
    # (nor checked: a malformed one must never cost the event).
    body.pop("traceparent", None)
    try:
        model = RECORD.validate_python(body)
    except ValidationError as exc:
        raise InvalidRecord(_reason(exc)) from None
    _check_key(record.key(), model.user_id)
    return TaskEvent(
        event_id=_canonical(body["event_id"], model.event_id),
        event_type=model.event_type,
        version=SCHEMA_VERSION,
        occurred_at=model.occurred_at,
        user_id=model.user_id,
        task_id=_canonical(body["task_id"], model.task_id),
        scope=SCOPE_USER,
        # The data as sent (extra fields included), already checked by jsonsafe.
        data=body["data"],
        position=Position(topic, partition, offset),
        traceparent=tracecontext.from_headers(record.headers()),
    )


def _canonical(sent: str, parsed: UUID) -> str:
    """The UUID's canonical text (lower-case, hyphenated): the text as sent when it is
    already that, which producers almost always send (``str(UUID)`` costs microseconds per
    id at ingest's rate); otherwise formatted from the parsed value."""
    if len(sent) == 36 and sent[8] == sent[13] == sent[18] == sent[23] == "-" and sent.islower():
        return sent
    return str(parsed)


def _check_key(key: str | bytes | None, user_id: int) -> None:
    # The key decides the partition: a record keyed to someone else (or to nobody, which
    # spreads records over partitions) would break exact resume for its user.
    if key is None:
        raise InvalidRecord(f"record has no key (it must be the user id, {user_id})")
    expected = str(user_id)
    if isinstance(key, bytes):
        if key == expected.encode():
            return
        key = key.decode("utf-8", "replace")
    if key != expected:
        raise InvalidRecord(f"key {key[:80]!r} does not match user_id {user_id}")


def _reason(exc: ValidationError) -> str:
    """The first problem, as ``field: message`` (the union's tag left out of the path)."""
    error = exc.errors(include_url=False, include_input=False)[0]
    loc = [str(part) for part in error["loc"]]
    if loc and loc[0].startswith("task."):
        loc = loc[1:]  # the discriminator's branch, e.g. "task.progress"
    if error["type"] == "union_tag_invalid":
        tag = str(error.get("ctx", {}).get("tag", ""))[:80]
        return f"event_type: unknown event type {tag}"
    if error["type"] == "union_tag_not_found":
        return "event_type: Field required"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{'.'.join(loc) or 'value'}: {error['msg']}{more}"
