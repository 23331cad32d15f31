"""docs/operations.md matches the code: every dashboard panel, stream close reason, log
setting and consumer log line it documents exists, and none the code has is missing."""

from __future__ import annotations

import json
import re
from pathlib import Path

from realtime import ingestlog

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "operations.md").read_text()


def test_every_dashboard_panel_is_explained() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "taskstream-dashboard.json").read_text())
    documented = set(re.findall(r"^\| ([^|`]+?) \| ", DOC, re.MULTILINE))
    assert {panel["title"] for panel in dashboard["panels"]} <= documented


def test_every_stream_close_reason_is_explained() -> None:
    reasons: set[str] = set()
    for name in ("stream.py", "writer.py", "hub.py", "inbox.py"):
        for line in (ROOT / "realtime" / name).read_text().splitlines():
            # reason = "…", closed_reason = "…", close("…"), close_all("…"), close, "…"
            if re.search(r'reason = |\.close\(|close_all\(|\.close, "', line):
                reasons |= set(re.findall(r'"([a-z]+(?:-[a-z]+)*)"', line))
    reasons.discard("reason")  # a key, not a value
    assert {"client-gone", "lifetime", "token-expired", "overflow", "slow-client", "drain"} <= (
        reasons
    )
    for reason in reasons:
        assert f"| `{reason}` |" in DOC, reason
    assert "| `unfillable-<reason>` |" in DOC


def test_every_dead_letter_reason_class_and_log_setting_is_documented() -> None:
    for _, kind in ingestlog.REASON_CLASSES:
        assert f"`{kind}`" in DOC, kind
    for name in ("TASKSTREAM_LOG_FORMAT", "TASKSTREAM_LOG_RECORDS", "LOG_LEVEL"):
        assert name in DOC, name
    for event in ("request", "stream opened", "stream closed", "stream refused", "batch"):
        assert f"| `{event}` |" in DOC, event
