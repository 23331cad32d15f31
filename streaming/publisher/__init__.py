"""Taskstream's publisher SDK: report a task's progress from any Python worker.

    from streaming.publisher import Publisher

    publisher = Publisher()  # KAFKA_BOOTSTRAP_SERVERS, TASKSTREAM_TOPIC_EVENTS
    with publisher.reporter(task_id, user_id) as report:
        report.started()
        for i, row in enumerate(rows, 1):
            handle(row)
            report.progress(i, len(rows), message=f"row {i}")
        report.succeeded({"rows": len(rows)})

No Django: this package imports only ``streaming.schema`` and ``streaming.jsonsafe`` of the
project (docs/workers.md). ``streaming.publisher.celery`` and ``streaming.publisher.rq``
integrate it with Celery and RQ.
"""

from streaming.publisher.core import (
    DeliveryError,
    DeliveryFailure,
    InvalidEvent,
    Publisher,
    ReporterFinished,
    build_record,
    get_publisher,
    set_publisher,
)
from streaming.publisher.reporter import TaskReporter

__all__ = [
    "DeliveryError",
    "DeliveryFailure",
    "InvalidEvent",
    "Publisher",
    "ReporterFinished",
    "TaskReporter",
    "build_record",
    "get_publisher",
    "set_publisher",
]
