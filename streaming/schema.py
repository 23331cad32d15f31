"""The event contract, defined once: every task event type and stream-control event.

These pydantic models are the definitions both languages share. The adapter
(``streaming.adapter``) validates every Kafka record with them; ``python -m
streaming.schema`` writes ``schema/taskstream-events.schema.json`` (committed), from which
the browser client's TypeScript types are generated; ``tests/test_schema.py`` fails when the
committed file is stale. docs/events.md describes the same contract in prose.

Why pydantic: it is already the most used schema library in Python, validates in compiled
code (about 7 µs per record here, measured in docs/benchmarks.md), and emits standard JSON
Schema, which TypeScript generators read; hand-written JSON Schema would need a second
validator on the Python side.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictInt,
    StrictStr,
    TypeAdapter,
)
from pydantic.json_schema import SkipJsonSchema, models_json_schema

# Django's default user id is a 32-bit integer; a larger one can name no user.
MAX_USER_ID: Final = 2**31 - 1
MAX_MESSAGE_LENGTH: Final = 500
# A version-00 traceparent, as streaming.tracecontext normalises every valid one.
TRACEPARENT_PATTERN: Final = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"


class _Data(BaseModel):
    # Workers may add fields of their own; they are delivered as sent (and checked like
    # every value: finite numbers, no NUL, bounded depth, see streaming.adapter).
    model_config = ConfigDict(extra="allow", frozen=True)


class TaskStartedData(_Data):
    """``task.started``: no fields of its own."""


class TaskProgressData(_Data):
    progress: StrictInt = Field(ge=0, le=100, description="percent done")
    message: StrictStr = Field(
        "", description=f"for the user; the task keeps the first {MAX_MESSAGE_LENGTH} characters"
    )


class TaskSucceededData(_Data):
    result: JsonValue = Field(None, description="any JSON the task returns")


class TaskFailedData(_Data):
    error: StrictStr = Field(description="why the task failed, for the user")


class TaskCancelledData(_Data):
    reason: StrictStr = ""


class _Envelope(BaseModel):
    """The fields every task event carries (docs/events.md, "Kafka record")."""

    model_config = ConfigDict(frozen=True)

    event_id: UUID = Field(description="unique per event; a repeat is a producer retry")
    version: Literal[1]  # streaming.events.SCHEMA_VERSION
    occurred_at: AwareDatetime
    user_id: StrictInt = Field(gt=0, le=MAX_USER_ID, description="the task's owner")
    task_id: UUID
    scope: Literal["user"]
    # Absent rather than null when there is none (SkipJsonSchema keeps null out of the
    # schema, so the generated type is an optional string).
    traceparent: Annotated[str, Field(pattern=TRACEPARENT_PATTERN)] | SkipJsonSchema[None] = Field(
        None,
        description=(
            "W3C trace context of the record that carried the event (its `traceparent` "
            "header); only in the SSE data, when the record had a valid one"
        ),
    )


class TaskStarted(_Envelope):
    event_type: Literal["task.started"]
    data: TaskStartedData


class TaskProgress(_Envelope):
    event_type: Literal["task.progress"]
    data: TaskProgressData


class TaskSucceeded(_Envelope):
    event_type: Literal["task.succeeded"]
    data: TaskSucceededData


class TaskFailed(_Envelope):
    event_type: Literal["task.failed"]
    data: TaskFailedData


class TaskCancelled(_Envelope):
    event_type: Literal["task.cancelled"]
    data: TaskCancelledData


TASK_EVENT_MODELS: Final = (TaskStarted, TaskProgress, TaskSucceeded, TaskFailed, TaskCancelled)
TaskEventRecord = Annotated[
    TaskStarted | TaskProgress | TaskSucceeded | TaskFailed | TaskCancelled,
    Field(discriminator="event_type"),
]
RECORD: Final = TypeAdapter(TaskEventRecord)


class StreamOpen(BaseModel):
    """``stream-open``: the first event of every stream."""

    user_id: int = Field(description="who opened the stream")
    scope: Literal["user", "staff"] = Field(
        "user", description="sent only by the staff scope (docs/events.md)"
    )


class StreamReset(BaseModel):
    """``stream-reset``: the requested cursor was not honoured (docs/events.md, "Resuming")."""

    reason: Literal["epoch-changed", "cursor-expired", "replay-limit", "cursor-ahead", "live-only"]
    requested: str
    resumed_from: str


class Heartbeat(BaseModel):
    """``heartbeat``: the stream is alive; ``t`` is the server's Unix time."""

    t: int


CONTROL_MODELS: Final = (StreamOpen, StreamReset, Heartbeat)


def _event_type(model: type[BaseModel]) -> str:
    """The one ``event_type`` a task event model admits (its Literal's value)."""
    values: tuple[Any, ...] = getattr(model.model_fields["event_type"].annotation, "__args__", ())
    return str(values[0])


def json_schema() -> dict[str, Any]:
    """The committed JSON Schema: one ``$defs`` entry per event and payload."""
    _, schema = models_json_schema(
        [(m, "validation") for m in (*TASK_EVENT_MODELS, *CONTROL_MODELS)],
        title="Taskstream events",
    )
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "taskstream-events.schema.json"
    schema["description"] = (
        "Every event a Taskstream stream carries; generated from streaming/schema.py."
    )
    refs = {_event_type(m): m.__name__ for m in TASK_EVENT_MODELS}
    schema["$defs"]["TaskEvent"] = {
        "title": "TaskEvent",
        "description": "Any task event: the Kafka record value and the SSE data of task.*.",
        "oneOf": [{"$ref": f"#/$defs/{name}"} for name in refs.values()],
        "discriminator": {
            "propertyName": "event_type",
            "mapping": {tag: f"#/$defs/{name}" for tag, name in refs.items()},
        },
    }
    schema["anyOf"] = [
        {"$ref": f"#/$defs/{name}"}
        for name in ("TaskEvent", "StreamOpen", "StreamReset", "Heartbeat")
    ]
    return schema


SCHEMA_PATH: Final = (
    Path(__file__).resolve().parent.parent / "schema" / "taskstream-events.schema.json"
)


def render() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.parent.mkdir(exist_ok=True)
    SCHEMA_PATH.write_text(render())
    sys.stdout.write(f"wrote {SCHEMA_PATH}\n")
