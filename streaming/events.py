"""The event model: what a task event is, which types exist, and how one becomes SSE bytes.

``docs/events.md`` documents every type in ``EVENT_TYPES``; a test keeps the two in step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, NamedTuple

import orjson

SCHEMA_VERSION: Final = 1
SCOPE_USER: Final = "user"


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    # The SSE `event:` field. Equal to the Kafka type today; kept separate so a type can be
    # renamed on one side without breaking the other.
    sse_event: str
    # The task status this event moves a task to.
    status: str


EVENT_TYPES: Final[dict[str, EventType]] = {
    t.name: t
    for t in (
        EventType("task.started", "task.started", "running"),
        EventType("task.progress", "task.progress", "running"),
        EventType("task.succeeded", "task.succeeded", "succeeded"),
        EventType("task.failed", "task.failed", "failed"),
        EventType("task.cancelled", "task.cancelled", "cancelled"),
    )
}

# Stream-control events the server itself emits (not from Kafka).
CONTROL_EVENTS: Final = ("stream-open", "stream-reset", "heartbeat")


class Position(NamedTuple):
    """Where a record sits in Kafka. Its string form names one record (logs, dead-letter
    headers); the SSE `id:` is a whole resume cursor (`streaming.cursor`). A named tuple:
    immutable, ordered and hashable like a frozen dataclass, at half its cost to build
    (ingest builds one per record)."""

    source: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.source}:{self.partition}:{self.offset}"


@dataclass(slots=True)
class TaskEvent:
    """One validated task event, as the adapter builds it from a Kafka record. Treat it as
    immutable: nothing changes an event once adapted. Not ``frozen`` only because a frozen
    dataclass sets each field through ``object.__setattr__`` (about 3 µs per event at
    ingest's rate, py-spy, docs/benchmarks.md)."""

    event_id: str
    event_type: str
    version: int
    occurred_at: datetime
    user_id: int
    task_id: str
    scope: str
    data: dict[str, Any]
    position: Position
    # The record's W3C trace context (its `traceparent` header), when it had a valid one.
    traceparent: str | None = None

    def envelope(self) -> dict[str, Any]:
        """The JSON object sent as the SSE `data:` (and written back to Kafka by workers)."""
        envelope = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "version": self.version,
            "occurred_at": self.occurred_at.isoformat(),
            "user_id": self.user_id,
            "task_id": self.task_id,
            "scope": self.scope,
            "data": self.data,
        }
        if self.traceparent is not None:
            envelope["traceparent"] = self.traceparent
        return envelope

    def sse_body(self) -> str:
        """The SSE frame without its `id:` line: the stream prefixes the resume cursor,
        which depends on what that stream has delivered (``streaming.cursor``)."""
        data = _dumps(self.envelope())
        if "\r" in data or "\n" in data:  # only json's output for what orjson refuses
            return encode_sse(data=data, event=EVENT_TYPES[self.event_type].sse_event)
        # JSON text escapes every CR and LF inside strings, so the envelope is one `data:`
        # line and the frame is a concatenation (ingest encodes each event's frame here).
        return f"event: {EVENT_TYPES[self.event_type].sse_event}\ndata: {data}\n\n"


def _dumps(value: Any) -> str:
    """Compact JSON, non-ASCII as is. orjson is several times faster than json and writes
    the same text for what the adapter admits; json stays for what it refuses (integers
    beyond 64 bits, from callers other than the adapter)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_FIELD_UNSAFE = str.maketrans("", "", "\r\n\0")


def encode_sse(
    *,
    data: str | None = None,
    event: str | None = None,
    event_id: str | None = None,
    retry_ms: int | None = None,
    comment: str | None = None,
) -> str:
    """Encode one SSE frame per the WHATWG rules.

    CR, LF and NUL are removed from `id:` and `event:` (a field-injection guard, and a NUL
    would make browsers ignore the id). Data is split on CRLF, CR and LF into `data:` lines
    so the browser reassembles it exactly.
    """
    lines: list[str] = []
    if comment is not None:
        lines.extend(f": {part}" for part in comment.splitlines() or [""])
    if retry_ms is not None:
        lines.append(f"retry: {int(retry_ms)}")
    if event_id is not None:
        lines.append(f"id: {event_id.translate(_FIELD_UNSAFE)}")
    if event is not None:
        lines.append(f"event: {event.translate(_FIELD_UNSAFE)}")
    if data is not None:
        # str.splitlines also splits on \v, \f, \x1c-\x1e, \x85, \u2028, \u2029, which SSE
        # does not treat as line ends: split on exactly CRLF, CR and LF.
        normalised = data.replace("\r\n", "\n").replace("\r", "\n")
        lines.extend(f"data: {part}" for part in normalised.split("\n"))
    return "\n".join(lines) + "\n\n"
