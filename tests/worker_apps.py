"""A Celery task and an RQ job as a user's worker code would write them (docs/workers.md),
run by real Celery and RQ workers in tests/test_workers_e2e.py. No Django here: the
workers start without DJANGO_SETTINGS_MODULE."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from streaming.publisher import TaskReporter
from streaming.publisher.celery import ReportingTask
from streaming.publisher.rq import reporting_job

app = Celery("taskstream-tests", broker=os.environ.get("TASKSTREAM_CELERY_BROKER_URL", "memory://"))
app.conf.task_default_queue = os.environ.get("TASKSTREAM_CELERY_QUEUE", "celery")


def count_steps(report: TaskReporter, steps: int, step_ms: int, fail_at: int | None) -> Any:
    for step in range(1, steps + 1):
        time.sleep(step_ms / 1000)
        if step == fail_at:
            raise RuntimeError(f"failed at step {step}")
        report.progress(step, steps, message=f"step {step}/{steps}")
    return {"steps": steps}


@app.task(base=ReportingTask, bind=True, name="tests.worker_apps.count")  # type: ignore[untyped-decorator]
def count(
    self: ReportingTask, steps: int = 4, step_ms: int = 250, fail_at: int | None = None
) -> Any:
    return count_steps(self.reporter, steps, step_ms, fail_at)


@reporting_job
def count_job(
    reporter: TaskReporter, steps: int = 4, step_ms: int = 250, fail_at: int | None = None
) -> Any:
    return count_steps(reporter, steps, step_ms, fail_at)
