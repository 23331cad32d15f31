"""The command loop of the long-running sync processes (worker, outbox relay), and the stop
deadline every long-running process keeps once told to stop."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from django.db import close_old_connections

logger = logging.getLogger(__name__)


# A process told to stop exits by this many seconds later whatever blocks it; its
# supervisor's SIGKILL comes at 15 s (docs/deployment.md, TimeoutStopSec).
STOP_DEADLINE_SECONDS = 12.0


def exit_by_deadline(name: str, seconds: float = STOP_DEADLINE_SECONDS) -> None:
    """Arm, once a process is told to stop: if it has not exited ``seconds`` later, end it
    then (exit code 0, a stop that was asked for). A librdkafka call can block for its
    socket timeout (60 s) when a broker went away in the middle of a request, and the clean
    stop waits for it. Cutting the process is as safe as the SIGKILL that would follow:
    every process's work survives ``kill -9`` (the chaos suite, tests/test_chaos.py)."""

    def expire() -> None:
        logger.warning("%s: not stopped %.1f s after being told to; exiting now", name, seconds)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


class StopFlag:
    """Set by SIGTERM/SIGINT; the handler only sets the flag, the loop drains and exits
    (by ``deadline`` seconds at the latest: ``exit_by_deadline``)."""

    def __init__(self, name: str = "process", deadline: float = STOP_DEADLINE_SECONDS) -> None:
        self.stopped = False
        self.name = name
        self.deadline = deadline

    def install(self) -> StopFlag:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopped:
            exit_by_deadline(self.name, self.deadline)
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
