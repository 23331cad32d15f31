"""Capture the JSON log lines a test causes, rendered by the project's own formatter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from config import logs
from realtime.ingestlog import RECORDS_LOGGER


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        """Every line, each parsed as one JSON object (fails if one is not)."""
        return [json.loads(line) for line in self.text().splitlines()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["event"] == name]


@contextmanager
def json_logs(*, records: bool = True) -> Iterator[Captured]:
    """Render every record from now on as the production JSON lines, into memory;
    ``records``: also the per-record lines of consume_events (TASKSTREAM_LOG_RECORDS)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json"))
    root = logging.getLogger()
    records_logger = logging.getLogger(RECORDS_LOGGER)
    was = records_logger.level
    root.addHandler(handler)
    records_logger.setLevel(logging.INFO if records else logging.WARNING)
    try:
        yield Captured(stream)
    finally:
        root.removeHandler(handler)
        records_logger.setLevel(was)
