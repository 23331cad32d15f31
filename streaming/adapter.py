"""The event adapter: a pure function from a Kafka record to a ``TaskEvent``.

It does no I/O. It accepts only what the database, the channel layer and a browser can
all hold (``streaming.jsonsafe``) and what the event contract allows
(``streaming.schema``): anything else raises ``InvalidRecord`` with a reason, and the
consumer sends the record to the dead-letter topic and goes on.

A record in the plain shape producers send is checked by ``_plain``, in a few comparisons;
any other goes through the contract's pydantic models, which accept or refuse it with the
reason. ``_plain`` accepts a subset of what the models accept, with the same values.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final, NamedTuple, Protocol
from uuid import UUID

from pydantic import ValidationError

from streaming import conf, jsonsafe, tracecontext
from streaming.events import SCHEMA_VERSION, SCOPE_USER, Position, TaskEvent
from streaming.schema import MAX_USER_ID, RECORD


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
    fields = _plain(body) or _validated(body)
    _check_key(record.key(), fields.user_id)
    return TaskEvent(
        event_id=fields.event_id,
        event_type=fields.event_type,
        version=SCHEMA_VERSION,
        occurred_at=fields.occurred_at,
        user_id=fields.user_id,
        task_id=fields.task_id,
        scope=SCOPE_USER,
        # The data as sent (extra fields included), already checked by jsonsafe.
        data=body["data"],
        position=Position(topic, partition, offset),
        traceparent=tracecontext.from_headers(record.headers()),
    )


class _Fields(NamedTuple):
    event_id: str  # canonical UUID text
    event_type: str
    occurred_at: datetime
    user_id: int
    task_id: str  # canonical UUID text


def _validated(body: dict[str, Any]) -> _Fields:
    """The contract's own check (``streaming.schema``): every record ``_plain`` leaves."""
    try:
        model = RECORD.validate_python(body)
    except ValidationError as exc:
        raise InvalidRecord(_reason(exc)) from None
    return _Fields(
        _canonical(body["event_id"], model.event_id),
        model.event_type,
        model.occurred_at,
        model.user_id,
        _canonical(body["task_id"], model.task_id),
    )


# What producers send (docs/events.md's example; the Celery and RQ reporters): canonical UUIDs
# and UTC timestamps as ``datetime.isoformat`` writes them.
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UTC_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|\+00:00)"
)
_KEYS: Final = frozenset(
    ("event_id", "event_type", "version", "occurred_at", "user_id", "task_id", "scope", "data")
)


def _plain(body: dict[str, Any]) -> _Fields | None:
    """The fields of a record in the plain shape every producer sends, or None for anything
    else, which the schema then decides. A strict subset of what ``RECORD`` accepts, with the
    same values (tests/test_adapter_plain.py holds the two together): pydantic's validation
    was the largest part of the adapter's CPU per event (py-spy, bench/notes.md), and these
    checks cost about half of it (2.7 against 5.0 µs here). Types are compared exactly
    (``type(x) is int``): a bool is no user id."""
    if body.keys() != _KEYS:
        return None
    event_id, task_id, user_id = body["event_id"], body["task_id"], body["user_id"]
    event_type, occurred, data = body["event_type"], body["occurred_at"], body["data"]
    if not (
        type(event_id) is str
        and type(task_id) is str
        and type(user_id) is int
        and type(occurred) is str
        and type(data) is dict
        and 0 < user_id <= MAX_USER_ID
        and body["scope"] == SCOPE_USER
        and type(body["version"]) is int
        and body["version"] == SCHEMA_VERSION
        and _UUID.fullmatch(event_id)
        and _UUID.fullmatch(task_id)
        and _UTC_TIME.fullmatch(occurred)
        and _data_ok(event_type, data)
    ):
        return None
    try:
        # Aware: the pattern requires the UTC offset (``Z`` or ``+00:00``).
        at = datetime.fromisoformat(occurred)
    except ValueError:  # no such day or time (2026-02-30): the schema says why
        return None
    return _Fields(event_id, event_type, at, user_id, task_id)


def _data_ok(event_type: Any, data: dict[str, Any]) -> bool:
    """``data`` as its event type's model (``streaming.schema``) accepts it; extra fields
    are allowed there, and every value is already checked by ``jsonsafe``."""
    if event_type == "task.progress":
        progress = data.get("progress")
        message = data.get("message", "")
        return type(progress) is int and 0 <= progress <= 100 and type(message) is str
    if event_type == "task.failed":
        return type(data.get("error")) is str
    if event_type == "task.cancelled":
        return type(data.get("reason", "")) is str
    return event_type in ("task.started", "task.succeeded")


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
