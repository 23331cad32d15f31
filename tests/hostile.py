"""Hostile task.events records: each one stopped consume_events before issue #8.

``poison(kind, user_id, task_id)`` is the raw value of a record of that kind, keyed like a
good one, so only its content is wrong. Shared by the unit and the real-Kafka tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.fakes import event_value


def _with(user_id: int, task_id: str, **data: object) -> dict[str, object]:
    return event_value(user_id=user_id, task_id=task_id, data={"progress": 1, **data})


def _raw(user_id: int, task_id: str, placeholder: str, raw: str) -> bytes:
    # json.dumps cannot write these on purpose: put a marker in, then swap the raw text in.
    text = json.dumps(_with(user_id, task_id, v=placeholder))
    return text.replace(json.dumps(placeholder), raw).encode()


def _deep(user_id: int, task_id: str) -> bytes:
    return _raw(user_id, task_id, "DEEP", "[" * 400 + "]" * 400)


KINDS: dict[str, Callable[[int, str], bytes]] = {
    "nan": lambda u, t: _raw(u, t, "NAN", "NaN"),
    "infinity": lambda u, t: _raw(u, t, "INF", "1e999"),
    "nul": lambda u, t: json.dumps(_with(u, t, message="a\x00b")).encode(),
    "lone surrogate": lambda u, t: _raw(u, t, "SUR", '"\\udc80"'),
    "deep nesting": _deep,
    "event_type not a string": lambda u, t: json.dumps(
        event_value(user_id=u, task_id=t, event_type=["task.progress"])
    ).encode(),
    "user_id a string": lambda u, t: json.dumps(event_value(user_id=str(u), task_id=t)).encode(),
    "too large": lambda u, t: json.dumps(_with(u, t, pad="x" * 300_000)).encode(),
    "not utf-8": lambda u, t: b"\xff\xfe{}",
}

# What the dead-letter reason says for each kind (a substring).
REASONS: dict[str, str] = {
    "nan": "not valid JSON",
    "infinity": "not valid JSON",
    "nul": "data.message: a string contains a NUL character",
    "lone surrogate": "not valid JSON",
    "deep nesting": "nested deeper than",
    "event_type not a string": "event_type: unknown event type",
    "user_id a string": "user_id: Input should be a valid integer",
    "too large": "over the 262144-byte limit",
    "not utf-8": "not valid JSON",
}


def poison(kind: str, user_id: int, task_id: str) -> bytes:
    return KINDS[kind](user_id, task_id)
