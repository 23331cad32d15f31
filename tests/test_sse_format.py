from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from streaming.events import Position, TaskEvent, encode_sse
from tests.sse import SSEEvent, parse_stream


def parse(text: str) -> list[SSEEvent | int]:
    return list(parse_stream(text.split("\n")))


def test_multi_line_data_round_trips_exactly() -> None:
    original = "line one\r\nline two\rline three\n  indented: with colon\n"
    frame = encode_sse(data=original, event="x", event_id="a:1:2")
    assert parse(frame) == [
        SSEEvent("x", original.replace("\r\n", "\n").replace("\r", "\n"), "a:1:2")
    ]


def test_id_and_event_never_carry_line_breaks_or_nul() -> None:
    frame = encode_sse(data="d", event="evil\r\nid: 999\n", event_id="1\n\0data: injected")
    lines = frame.split("\n")
    assert lines[0] == "id: 1data: injected"
    assert lines[1] == "event: evilid: 999"
    assert next(x for x in parse(frame) if isinstance(x, SSEEvent)).data == "d"


def test_retry_and_comment_frames() -> None:
    frame = encode_sse(retry_ms=3000, comment="hello")
    assert frame == ": hello\nretry: 3000\n\n"
    assert parse(frame) == [3000]


def test_an_event_body_carries_type_and_envelope() -> None:
    event = TaskEvent(
        event_id=str(uuid.uuid4()),
        event_type="task.progress",
        version=1,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        user_id=3,
        task_id=str(uuid.uuid4()),
        scope="user",
        data={"progress": 5, "message": "multi\nline ünïcode"},
        position=Position("task.events", 1, 77),
    )
    [parsed] = parse(f"id: {event.position}\n" + event.sse_body())
    assert isinstance(parsed, SSEEvent)
    assert parsed.id == "task.events:1:77"
    assert parsed.event == "task.progress"
    assert json.loads(parsed.data) == event.envelope()
