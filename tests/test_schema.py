"""The event contract's JSON Schema is generated from streaming/schema.py and committed;
the browser client's types are generated from it (tests/test_frontend.py checks those)."""

from __future__ import annotations

from streaming.schema import SCHEMA_PATH, render


def test_the_committed_json_schema_is_fresh() -> None:
    assert SCHEMA_PATH.read_text() == render(), (
        "schema/taskstream-events.schema.json is stale: run `python -m streaming.schema`, "
        "then `npm run gen:types` in frontend/"
    )
