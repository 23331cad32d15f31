"""The command loop of the long-running sync processes (worker, outbox relay)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType

from django.db import close_old_connections

logger = logging.getLogger(__name__)


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


def run_loop(
    name: str, flag: StopFlag, step: Callable[[], object], close: Callable[[], object]
) -> None:
    """Run ``step`` until ``flag`` is set, recycling the DB connection between steps, then
    ``close``. Each step is one unit of work, so tests drive ``step`` without this loop."""
    logger.info("%s started", name)
    try:
        while not flag.stopped:
            step()
            recycle_db_connection()
    finally:
        close()
        logger.info("%s stopped", name)
