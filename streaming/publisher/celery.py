"""Celery integration: a task base class that reports to Taskstream by itself.

    from celery import Celery
    from streaming.publisher.celery import ReportingTask

    app = Celery("myapp", broker="redis://localhost:6379/5")

    @app.task(base=ReportingTask, bind=True)
    def report(self, rows=100):
        for i in range(rows):
            ...
            self.reporter.progress(i + 1, rows, message=f"row {i + 1}")
        return {"rows": rows}

``task.started`` is sent before the body runs, ``task.succeeded`` (with the return value)
after it returns, ``task.failed`` (with the exception's message) when it raises, and
``task.cancelled`` when the task is revoked (``app.control.revoke``, which is what
Taskstream's cancel does for a task it dispatched to Celery). The task body reports
progress through ``self.reporter`` (a ``TaskReporter``: rate-limited, coalescing).

Which Taskstream task a Celery task reports for travels in a message header,
``taskstream`` = ``{"task_id", "user_id"}``; Taskstream's dispatcher sets it (and uses the
Taskstream task id as the Celery task id). To start one by hand:
``report.apply_async(kwargs=..., task_id=task_id, headers=taskstream_headers(task_id, user_id))``.
A task run without the header reports nothing; its ``reporter`` raises.

The process's ``Publisher`` is made on first use from ``KAFKA_BOOTSTRAP_SERVERS`` and
``TASKSTREAM_TOPIC_EVENTS``, or set with ``set_publisher``. No Django needed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Task, signals  # type: ignore[import-untyped]

from streaming.publisher.core import (
    IDENTITY_KEY,
    InvalidEvent,
    get_publisher,
    identity_value,
    parse_identity,
)
from streaming.publisher.reporter import TaskReporter

logger = logging.getLogger(__name__)

HEADER = IDENTITY_KEY


def taskstream_headers(task_id: str, user_id: int) -> dict[str, Any]:
    """The message headers that tie a Celery task to a Taskstream task."""
    return {HEADER: identity_value(task_id, user_id)}


def identity(request: Any) -> tuple[str, int] | None:
    """``(task_id, user_id)`` from a task request's ``taskstream`` header, if any."""
    value = getattr(request, HEADER, None)
    if value is None and isinstance(getattr(request, "headers", None), dict):
        value = request.headers.get(HEADER)  # where some Celery versions nest custom headers
    return parse_identity(value)


class ReportingTask(Task):  # type: ignore[misc]
    """Base class of Celery tasks that report to Taskstream (see the module's docstring)."""

    #: Seconds between two progress events of one task (the ones between coalesce).
    progress_interval: float = 0.2

    @property
    def reporter(self) -> TaskReporter:
        reporter: TaskReporter | None = getattr(self.request, "taskstream_reporter", None)
        if reporter is None:
            found = identity(self.request)
            if found is None:
                raise RuntimeError(
                    f"{self.name} {self.request.id} has no {HEADER!r} header: it was not "
                    "started by Taskstream (see taskstream_headers)"
                )
            reporter = get_publisher().reporter(*found, progress_interval=self.progress_interval)
            self.request.taskstream_reporter = reporter
        return reporter

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        if identity(self.request) is not None:
            self.reporter.started()

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        if identity(self.request) is None or self.reporter.finished:
            return
        try:
            self.reporter.succeeded(retval)
        except InvalidEvent as exc:
            logger.warning("%s %s: result not sent (%s)", self.name, task_id, exc)
            self.reporter.succeeded(None)
        self.reporter.close()

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        if identity(self.request) is None or self.reporter.finished:
            return
        self.reporter.failed(exc)
        self.reporter.close()


def _on_revoked(sender: Any = None, request: Any = None, **info: Any) -> None:
    # Runs in the worker's main process: for a task revoked before it ran, and for a
    # running one terminated by ``revoke(..., terminate=True)``.
    if not isinstance(sender, ReportingTask):
        return
    found = identity(request)
    if found is None:
        return
    publisher = get_publisher()
    reason = "terminated" if info.get("terminated") else "revoked"
    if info.get("expired"):
        reason = "expired"
    publisher.send("task.cancelled", user_id=found[1], task_id=found[0], data={"reason": reason})
    publisher.flush()
    logger.info("taskstream: %s %s", reason, json.dumps(found))


signals.task_revoked.connect(_on_revoked, weak=False)
