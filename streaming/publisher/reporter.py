"""``TaskReporter``: the events of one task, with progress rate-limited and coalesced."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from streaming import tracecontext
from streaming.publisher.core import (
    DEFAULT_PROGRESS_INTERVAL,
    TERMINAL,
    InvalidEvent,
    Publisher,
    ReporterFinished,
    build_record,
)

logger = logging.getLogger(__name__)


class TaskReporter:
    """The events of one task: ``started``, ``progress``, then one final event.

    Progress is rate-limited: at most one event per ``progress_interval`` seconds; calls in
    between replace a pending one, which is sent when the interval is over (by a
    background thread), before the final event, or on ``close``/exit of a ``with`` block:
    the last progress is always sent. As a context manager it fails the task with the
    exception that leaves the block (unless a final event was sent) and flushes.

    Every event of the run carries one W3C ``traceparent`` (a Kafka header): the caller's,
    e.g. from its tracing library's current span, or a new trace made for this run.
    """

    def __init__(
        self,
        publisher: Publisher,
        task_id: str,
        user_id: int,
        *,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
        traceparent: str | None = None,
    ) -> None:
        self.publisher = publisher
        # A malformed one is ignored, never an error: the run gets a trace of its own.
        self.traceparent = tracecontext.parse(traceparent) or tracecontext.generate()
        self.task_id = str(task_id)
        self.user_id = user_id
        self.progress_interval = progress_interval
        self.clock = clock
        self.background = background
        self.finished: str | None = None  # the final event type, once sent
        self.last_progress: tuple[int, str] | None = None
        self._last_sent_at: float | None = None
        self._pending: tuple[int, str, dict[str, Any]] | None = None
        self._lock = threading.RLock()

    # -- events ---------------------------------------------------------------------------
    def started(self) -> None:
        self._send("task.started", {})

    def progress(
        self, done: int | float, total: int | float | None = None, message: str = "", **extra: Any
    ) -> None:
        """``done`` of ``total`` (or ``done`` percent when ``total`` is None)."""
        percent = _percent(done, total)
        with self._lock:
            self._check_open()
            data = {"progress": percent, "message": message, **extra}
            build_record("task.progress", user_id=self.user_id, task_id=self.task_id, data=data)
            if self.last_progress == (percent, message) and not extra:
                self._pending = None  # nothing new for the user
                return
            now = self.clock()
            if self._last_sent_at is None or now - self._last_sent_at >= self.progress_interval:
                self._pending = None
                self._emit_progress(percent, message, data, now)
                return
            self._pending = (percent, message, data)
            due = self._last_sent_at + self.progress_interval
        if self.background:
            self.publisher._schedule(self)
        logger.debug("task %s: progress %d%% coalesced until %.3f", self.task_id, percent, due)

    def succeeded(self, result: Any = None) -> None:
        self._send("task.succeeded", {"result": result})

    def failed(self, error: str | BaseException) -> None:
        message = error if isinstance(error, str) else (str(error) or type(error).__name__)
        self._send("task.failed", {"error": message[:2000]})

    def cancelled(self, reason: str = "") -> None:
        self._send("task.cancelled", {"reason": reason})

    # -- pending progress -----------------------------------------------------------------
    def due_at(self) -> float | None:
        with self._lock:
            if self._pending is None or self._last_sent_at is None:
                return None
            return self._last_sent_at + self.progress_interval

    def send_due(self, force: bool = False) -> bool:
        """Send the pending progress if its time has come (or ``force``); True if sent."""
        with self._lock:
            due = self.due_at()
            now = self.clock()
            if due is None or (now < due and not force) or self._pending is None:
                return False
            percent, message, data = self._pending
            self._pending = None
            self._emit_progress(percent, message, data, now)
            return True

    def close(self, timeout: float = 10.0) -> None:
        """Send the pending progress and wait for every event of the process."""
        self.send_due(force=True)
        self.publisher.flush(timeout)

    def __enter__(self) -> TaskReporter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and self.finished is None:
            self.failed(exc if str(exc) else f"{type(exc).__name__}")
        self.close()

    # -- internals ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.finished is not None:
            raise ReporterFinished(f"task {self.task_id} already reported {self.finished}")

    def _emit_progress(self, percent: int, message: str, data: dict[str, Any], now: float) -> None:
        self.publisher.send(
            "task.progress",
            user_id=self.user_id,
            task_id=self.task_id,
            data=data,
            traceparent=self.traceparent,
        )
        self._last_sent_at = now
        self.last_progress = (percent, message)

    def _send(self, event_type: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._check_open()
            # Checked before the pending progress goes out: a bad final event sends nothing.
            build_record(event_type, user_id=self.user_id, task_id=self.task_id, data=data)
            if event_type in TERMINAL:
                self.send_due(force=True)
            self.publisher.send(
                event_type,
                user_id=self.user_id,
                task_id=self.task_id,
                data=data,
                traceparent=self.traceparent,
            )
            if event_type in TERMINAL:
                self.finished = event_type


def _percent(done: int | float, total: int | float | None) -> int:
    for name, number in (("done", done), ("total", total)):
        if number is not None and (isinstance(number, bool) or not isinstance(number, int | float)):
            raise InvalidEvent(f"task.progress: {name} must be a number, not {number!r}")
    if total is None:
        if not 0 <= done <= 100:
            raise InvalidEvent(f"task.progress: {done} is not a percentage (0-100)")
        return int(done)
    if not total > 0 or not 0 <= done <= total:
        raise InvalidEvent(f"task.progress: done must be between 0 and total ({done} of {total})")
    return int(done * 100 // total)


class Ticker:
    """One daemon thread per process: sends coalesced progress when its interval is over."""

    def __init__(self) -> None:
        self._reporters: weakref.WeakSet[TaskReporter] = weakref.WeakSet()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="taskstream-ticker", daemon=True)
        self._thread.start()

    def add(self, reporter: TaskReporter) -> None:
        with self._lock:
            self._reporters.add(reporter)
        self._wake.set()

    def send_all(self) -> None:
        with self._lock:
            reporters = list(self._reporters)
        for reporter in reporters:
            reporter.send_due(force=True)

    def _run(self) -> None:
        while True:
            self._wake.clear()
            with self._lock:
                reporters = list(self._reporters)
            wait = 1.0
            for reporter in reporters:
                try:
                    reporter.send_due()
                except Exception:
                    logger.exception("taskstream: progress of %s not sent", reporter.task_id)
                with self._lock:  # add() takes this lock after setting a pending event
                    due = reporter.due_at()
                    if due is None:
                        self._reporters.discard(reporter)
                if due is not None:
                    wait = min(wait, max(0.0, due - reporter.clock()))
            self._wake.wait(wait)
