from __future__ import annotations

import re
from pathlib import Path

from streaming.events import CONTROL_EVENTS, EVENT_TYPES

DOC = (Path(__file__).resolve().parent.parent / "docs" / "events.md").read_text()


def test_every_event_type_is_documented_with_its_sse_name() -> None:
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `([a-z.]+)` \| `([a-z.-]+)` \| user \|", DOC, re.MULTILINE)
    }
    assert rows == {name: t.sse_event for name, t in EVENT_TYPES.items()}


def test_every_control_event_is_documented() -> None:
    for name in CONTROL_EVENTS:
        assert re.search(rf"^\| `{re.escape(name)}` \|", DOC, re.MULTILINE), name
