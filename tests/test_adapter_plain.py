"""The adapter's fast path (``_plain``) against the contract's own check (``_validated``):
on a corpus of records mutated field by field, ``_plain`` accepts only what the schema
accepts, with the same values, and it does accept what producers send (else it saves nothing).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from streaming.adapter import InvalidRecord, _plain, _validated
from streaming.publisher.core import build_record
from streaming.schema import MAX_USER_ID
from tests.fakes import event_value

ID = "0f4cef57-fdb5-451a-844b-27a6421fb9c0"
DATA: dict[str, dict[str, Any]] = {
    "task.started": {},
    "task.progress": {"progress": 40, "message": "half"},
    "task.succeeded": {"result": {"rows": [1, 2.5, None, "x"]}},
    "task.failed": {"error": "boom"},
    "task.cancelled": {"reason": "user"},
}
ODD: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    100,
    101,
    MAX_USER_ID,
    MAX_USER_ID + 1,
    2**63,
    1.0,
    1.5,
    "",
    "1",
    "user",
    "task.progress",
    [],
    {},
    [1],
    {"a": 1},
]
UUIDS = [
    ID,
    ID.upper(),
    ID[:8].upper() + ID[8:],
    ID[:-4] + ID[-4:].upper(),
    "{" + ID + "}",
    ID.replace("-", ""),
    "urn:uuid:" + ID,
    " " + ID,
    ID[:-1],
    ID + "0",
    ID[:8] + "_" + ID[9:],
    "00000000-0000-0000-0000-000000000000",
    "\u0660" * 8 + ID[8:],  # Arabic-Indic digits
]
TIMES = [
    "2026-12-01T07:21:14.855345+00:00",
    "2026-12-01T07:21:14+00:00",
    "2026-12-01T07:21:14Z",
    "2026-12-01T07:21:14.8Z",
    "2026-12-01T07:21:14.1234567+00:00",
    "2026-12-01T07:21:14-00:00",
    "2026-12-01T07:21:14+01:00",
    "2026-12-01T07:21:14",
    "2026-12-01t07:21:14Z",
    "2026-12-01 07:21:14Z",
    "2026-12-01T07:21Z",
    "2026-12-01T24:00:00Z",
    "2026-12-01T23:59:60Z",
    "2026-02-30T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999+00:00",
    "\uff12\uff10\uff12\uff16-12-01T07:21:14Z",  # fullwidth digits
    "20261201T072114Z",
    "",
]


def corpus() -> Iterator[dict[str, Any]]:
    for event_type, data in DATA.items():
        base = event_value(user_id=7, task_id=ID, event_id=ID, event_type=event_type, data=data)
        yield base
        for key in base:
            gone = dict(base)
            del gone[key]
            yield gone
            for odd in ODD:
                yield {**base, key: odd}
        yield {**base, "extra": 1}
        for key in ("event_id", "task_id"):
            for text in UUIDS:
                yield {**base, key: text}
        for text in TIMES:
            yield {**base, "occurred_at": text}
        for other in DATA:
            yield {**base, "event_type": other}
        for field in ("progress", "message", "error", "reason", "result", "extra"):
            without = {k: v for k, v in data.items() if k != field}
            yield {**base, "data": without}
            for odd in ODD:
                yield {**base, "data": {**data, field: odd}}


def outcome(body: dict[str, Any]) -> Any:
    try:
        return _validated(copy.deepcopy(body))
    except InvalidRecord as exc:
        return exc


def test_the_fast_path_accepts_only_what_the_schema_accepts_with_the_same_values() -> None:
    checked = accepted = 0
    for body in corpus():
        checked += 1
        plain = _plain(copy.deepcopy(body))
        if plain is None:
            continue
        accepted += 1
        schema = outcome(body)
        assert not isinstance(schema, InvalidRecord), (body, schema)
        assert plain == schema, body
        assert plain.occurred_at.isoformat() == schema.occurred_at.isoformat(), body
        assert plain.occurred_at.utcoffset() == schema.occurred_at.utcoffset()
    # Both sides of the comparison were exercised.
    assert checked > 1000
    assert 100 < accepted < checked - 500


@pytest.mark.parametrize("event_type", list(DATA))
def test_what_producers_send_takes_the_fast_path(event_type: str) -> None:
    # The publisher (Celery and RQ reporters, the demo worker) and the docs' example shape.
    _, _, envelope = build_record(
        event_type, user_id=7, task_id=str(uuid.uuid4()), data=DATA[event_type]
    )
    fields = _plain(envelope)
    assert fields is not None
    assert fields.occurred_at.tzinfo is not None
    assert fields.occurred_at.utcoffset() == datetime.now(UTC).utcoffset()
    assert fields == _validated(dict(envelope))
