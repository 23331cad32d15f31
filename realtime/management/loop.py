"""Shared scaffolding for the long-running sync commands (worker, outbox relay)."""

from __future__ import annotations

import signal
from types import FrameType

from django.db import close_old_connections


class StopFlag:
    """Set by SIGTERM/SIGINT; the handler only sets the flag, the loop drains and exits."""

    def __init__(self) -> None:
        self.stopped = False

    def install(self) -> StopFlag:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopped = True

    def set(self) -> None:
        self.stopped = True


def recycle_db_connection() -> None:
    """Drop a broken or expired DB connection between units of work (long-lived process)."""
    close_old_connections()
