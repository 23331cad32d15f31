"""Handing tasks to Celery or RQ: the route of a kind, and the dispatcher the relay calls.

``TASKSTREAM_TASK_ROUTES`` (config/settings.py) maps a kind to ``celery:TASK_NAME`` or
``rq:MODULE.FUNCTION``. ``tasks.services`` writes the command of a routed task to the
outbox with the route as the row's ``topic`` (no Kafka topic contains ``:``), in the same
transaction as the task; the outbox relay then calls ``Dispatcher.dispatch`` instead of
producing the row, and marks the row sent only once the broker accepted the job. So the
guarantee is the outbox's: a task is enqueued exactly when its row commits, and a broker
that is down delays it (retried with backoff) instead of losing it. A crash between the
broker's acceptance and marking the row enqueues the job again (at least once): RQ skips
a job id that exists; Celery runs it twice, and the second run's events change a
finished task no more. ``transaction.on_commit`` was not used: a crash or a broker error
after the commit would lose the job with nothing left to retry it.

The Taskstream task id is the Celery task id / RQ job id, and the worker-side
integrations (``streaming.publisher.celery``, ``streaming.publisher.rq``) find the owner in
a header / the job's meta.
"""

from __future__ import annotations

import logging
import uuid
from functools import cached_property
from typing import Any

from django.conf import settings

from streaming.publisher import Publisher

logger = logging.getLogger(__name__)

SYSTEMS = ("celery", "rq")
# Namespace of the ids of the task.cancelled events the dispatcher sends for RQ jobs
# cancelled before they started (uuid5 of the task id).
CANCELLED_NAMESPACE = uuid.UUID("2f6f1c1e-9a3b-4d7e-8a55-0b6c3f4e9d12")


def route_for(kind: str) -> str | None:
    """``celery:NAME`` or ``rq:PATH`` for a routed kind; None for the demo worker's."""
    route: str | None = settings.TASKSTREAM_TASK_ROUTES.get(kind)
    return route


def is_route(topic: str) -> bool:
    system, sep, target = topic.partition(":")
    return bool(sep and target) and system in SYSTEMS


class DispatchRefused(Exception):
    """The row can never be dispatched (an unknown system or command): it fails for good."""


class Dispatcher:
    """Starts and cancels routed tasks. ``publisher`` sends the ``task.cancelled`` of an
    RQ job cancelled before it started (no RQ worker will ever see it)."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def dispatch(self, route: str, command: dict[str, Any]) -> None:
        system, _, target = route.partition(":")
        name = command.get("command")
        task_id, user_id = str(command["task_id"]), int(command["user_id"])
        if system == "celery" and name == "task.requested":
            self._celery_start(target, task_id, user_id, command.get("params") or {})
        elif system == "celery" and name == "task.cancel_requested":
            # Revoked before it runs: the worker drops it; running: its process is
            # terminated. Either way the worker's task_revoked handler sends task.cancelled.
            self.celery.control.revoke(task_id, terminate=True)
        elif system == "rq" and name == "task.requested":
            self._rq_start(target, task_id, user_id, command.get("params") or {})
        elif system == "rq" and name == "task.cancel_requested":
            self._rq_cancel(task_id, user_id)
        else:
            raise DispatchRefused(f"cannot dispatch {name!r} to {route!r}")

    # -- Celery -----------------------------------------------------------------------------
    @cached_property
    def celery(self) -> Any:
        from celery import Celery  # type: ignore[import-untyped]

        app = Celery("taskstream-dispatch", broker=settings.TASKSTREAM_CELERY_BROKER_URL)
        app.conf.update(
            task_default_queue=settings.TASKSTREAM_CELERY_QUEUE,
            broker_connection_timeout=5,
            broker_transport_options={"socket_connect_timeout": 5, "socket_timeout": 10},
        )
        return app

    def _celery_start(self, name: str, task_id: str, user_id: int, params: dict[str, Any]) -> None:
        from streaming.publisher.celery import taskstream_headers

        self.celery.send_task(
            name,
            kwargs=params,
            task_id=task_id,
            headers=taskstream_headers(task_id, user_id),
            queue=settings.TASKSTREAM_CELERY_QUEUE,
            # A broker error raises at once; the relay retries the row with backoff.
            retry=False,
        )
        logger.info("dispatched task %s to Celery task %s", task_id, name)

    # -- RQ ---------------------------------------------------------------------------------
    @cached_property
    def rq_queue(self) -> Any:
        from redis import Redis
        from rq import Queue

        connection = Redis.from_url(
            settings.TASKSTREAM_RQ_REDIS_URL, socket_connect_timeout=5, socket_timeout=10
        )
        return Queue(settings.TASKSTREAM_RQ_QUEUE, connection=connection)

    def _rq_start(self, path: str, task_id: str, user_id: int, params: dict[str, Any]) -> None:
        from rq.job import Callback, Job

        from streaming.publisher.rq import STOPPED_CALLBACK, taskstream_meta

        queue = self.rq_queue
        if Job.exists(task_id, connection=queue.connection):
            logger.info("task %s is already an RQ job (a re-sent outbox row)", task_id)
            return
        queue.enqueue_call(
            path,
            kwargs=params,
            job_id=task_id,
            meta=taskstream_meta(task_id, user_id),
            on_stopped=Callback(STOPPED_CALLBACK),
        )
        logger.info("dispatched task %s to RQ job %s", task_id, path)

    def _rq_cancel(self, task_id: str, user_id: int) -> None:
        from rq.command import send_stop_job_command
        from rq.exceptions import NoSuchJobError
        from rq.job import Job, JobStatus

        connection = self.rq_queue.connection
        try:
            job = Job.fetch(task_id, connection=connection)
        except NoSuchJobError:
            return
        status = job.get_status()
        if status == JobStatus.STARTED:
            # The worker kills the job's process and runs its on_stopped callback, which
            # sends task.cancelled.
            send_stop_job_command(connection, task_id)
        elif status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            job.cancel()
            self._cancelled(task_id, user_id)
        elif status == JobStatus.CANCELED:  # a retry after the event was not acknowledged
            self._cancelled(task_id, user_id)

    def _cancelled(self, task_id: str, user_id: int) -> None:
        """No RQ worker will see a job cancelled before it started: report it here, with an
        event id fixed per task, so a retried report is a duplicate consume_events ignores."""
        self.publisher.send(
            "task.cancelled",
            user_id=user_id,
            task_id=task_id,
            data={"reason": "cancelled"},
            event_id=str(uuid.uuid5(CANCELLED_NAMESPACE, task_id)),
        )
        self.publisher.flush()
