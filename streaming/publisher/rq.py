"""RQ integration: a decorator that makes a job function report to Taskstream by itself.

    from streaming.publisher.rq import reporting_job

    @reporting_job
    def export(reporter, rows=100):
        for i in range(rows):
            ...
            reporter.progress(i + 1, rows, message=f"row {i + 1}")
        return {"rows": rows}

The decorated function receives a ``TaskReporter`` as its first argument. ``task.started``
is sent before it runs, ``task.succeeded`` (with the return value) after it returns,
``task.failed`` (with the exception's message) when it raises; a job stopped with
``send_stop_job_command`` sends ``task.cancelled`` through the ``on_stopped`` callback
Taskstream's dispatcher attaches (``STOPPED_CALLBACK``); Taskstream's cancel of a job that
has not started yet cancels it in RQ and sends ``task.cancelled`` itself.

Which Taskstream task a job reports for is in ``job.meta["taskstream"]`` =
``{"task_id", "user_id"}``; the dispatcher sets it and uses the Taskstream task id as the
RQ job id. To enqueue one by hand: ``queue.enqueue_call(export, kwargs=...,
job_id=task_id, meta=taskstream_meta(task_id, user_id), on_stopped=Callback(STOPPED_CALLBACK))``.
No Django needed; the ``Publisher`` is the same per-process one as Celery's.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from rq import get_current_job

from streaming.publisher.core import (
    IDENTITY_KEY,
    InvalidEvent,
    get_publisher,
    identity_value,
    parse_identity,
)
from streaming.publisher.reporter import TaskReporter

logger = logging.getLogger(__name__)

META = IDENTITY_KEY
STOPPED_CALLBACK = "streaming.publisher.rq.on_stopped"
#: Seconds between two progress events of one job (the ones between coalesce).
PROGRESS_INTERVAL = 0.2

R = TypeVar("R")


def taskstream_meta(task_id: str, user_id: int) -> dict[str, Any]:
    return {META: identity_value(task_id, user_id)}


def identity(meta: Any) -> tuple[str, int] | None:
    return parse_identity(meta.get(META) if isinstance(meta, dict) else None)


def reporting_job(func: Callable[..., R]) -> Callable[..., R]:
    """Run ``func(reporter, *args, **kwargs)`` inside the current RQ job, reporting it."""

    @functools.wraps(func)
    def job(*args: Any, **kwargs: Any) -> R:
        current = get_current_job()
        found = identity(current.meta if current is not None else None)
        if found is None:
            raise RuntimeError(
                f"{func.__qualname__}: the job has no meta[{META!r}]: it was not started by "
                "Taskstream (see taskstream_meta)"
            )
        reporter = get_publisher().reporter(*found, progress_interval=PROGRESS_INTERVAL)
        reporter.started()
        try:
            result = func(reporter, *args, **kwargs)
        except BaseException as exc:
            if reporter.finished is None:
                reporter.failed(exc if str(exc) else type(exc).__name__)
            reporter.close()
            raise
        if reporter.finished is None:
            try:
                reporter.succeeded(result)
            except InvalidEvent as exc:
                logger.warning("job %s: result not sent (%s)", found[0], exc)
                reporter.succeeded(None)
        reporter.close()
        return result

    return job


def on_stopped(job: Any, connection: Any) -> None:
    """RQ's ``on_stopped`` callback: the job was stopped (Taskstream's cancel)."""
    found = identity(job.meta)
    if found is None:
        return
    reporter: TaskReporter = get_publisher().reporter(*found)
    reporter.cancelled("stopped")
    reporter.close()
