"""Creating and cancelling tasks: what the API changes (events change tasks in
``tasks.apply``).

Both write an outbox row in the same transaction, so the Kafka command exists exactly when
the change does. A kind routed to Celery or RQ (``tasks.dispatch``) gets a row addressed to
its route instead of ``task.requests``: the relay hands it to that broker.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from streaming import conf
from tasks.dispatch import route_for
from tasks.models import AsyncTask, OutboxMessage

COMMAND_VERSION = 1


def create_task(owner_id: int, kind: str, params: dict[str, Any]) -> AsyncTask:
    with transaction.atomic():
        task = AsyncTask.objects.create(owner_id=owner_id, kind=kind, params=params)
        _enqueue_command(task, "task.requested", {"kind": kind, "params": params})
    return task


class CancelRefused(Exception):
    pass


def request_cancel(task_id: uuid.UUID, owner_id: int) -> AsyncTask:
    """Mark a cancel request and enqueue it for the worker; refuse finished tasks."""
    with transaction.atomic():
        task = AsyncTask.objects.select_for_update().get(id=task_id, owner_id=owner_id)
        if task.is_finished:
            raise CancelRefused(f"task is already {task.status}")
        if task.cancel_requested_at is None:
            task.cancel_requested_at = timezone.now()
            task.save(update_fields=["cancel_requested_at", "updated_at"])
            _enqueue_command(task, "task.cancel_requested", {})
    return task


def _enqueue_command(task: AsyncTask, command: str, extra: dict[str, Any]) -> None:
    value = {
        "command": command,
        "version": COMMAND_VERSION,
        "command_id": str(uuid.uuid4()),
        "task_id": str(task.id),
        "user_id": task.owner_id,
        "requested_at": timezone.now().isoformat(),
        **extra,
    }
    # Keyed by task so a task's request and its cancel share a partition, in order.
    topic = route_for(task.kind) or conf.get().TOPIC_REQUESTS
    OutboxMessage.objects.create(topic=topic, key=str(task.id), value=value)
