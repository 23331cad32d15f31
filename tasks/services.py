"""The only place that changes task state: creating, cancelling and applying events.

Creating and cancelling write an outbox row in the same transaction, so the Kafka command
exists exactly when the change does. Applying events is idempotent by Kafka position and by
event id, because Kafka delivers at least once.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from streaming import conf
from streaming.events import EVENT_TYPES, TaskEvent
from tasks.delivery import is_delivered
from tasks.models import AsyncTask, OutboxMessage, TaskEventLog, TaskStatus

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
    OutboxMessage.objects.create(topic=conf.get().TOPIC_REQUESTS, key=str(task.id), value=value)


class Outcome(enum.Enum):
    APPLIED = "applied"  # new event; the task changed
    STALE = "stale"  # new event, but older than the task's state (or after a final state)
    REDELIVERED = "redelivered"  # this Kafka position was applied before (consumer restart)
    DUPLICATE = "duplicate"  # same event id at another position (a producer retry)
    REJECTED = "rejected"  # can never apply: unknown user or task, wrong owner


@dataclass(frozen=True, slots=True)
class Applied:
    event: TaskEvent
    outcome: Outcome
    reason: str = ""
    # Whether the event goes to its owner's streams: ``tasks.delivery.is_delivered`` against
    # the log as this batch leaves it.
    deliver: bool = False


def apply_events(events: Sequence[TaskEvent], epoch: str = "") -> list[Applied]:
    """Apply a batch of events in one transaction; return one outcome per event, in order.

    ``epoch`` is the identity of the events' topic (streaming.kafka.topic_epoch), kept with
    the task's last position so that position is a complete stream cursor."""
    if not events:
        return []
    user_ids = {e.user_id for e in events}
    task_ids = {e.task_id for e in events}
    with transaction.atomic():
        known_users = set(
            get_user_model().objects.filter(pk__in=user_ids).values_list("pk", flat=True)
        )
        tasks = {
            str(t.id): t for t in AsyncTask.objects.select_for_update().filter(id__in=task_ids)
        }
        seen_ids = {
            str(row[0]): (row[1], row[2], row[3])
            for row in TaskEventLog.objects.filter(
                event_id__in=[e.event_id for e in events]
            ).values_list("event_id", "source", "partition", "offset")
        }
        # A position already taken by another event id means the topic was rebuilt and its
        # offsets reused; refuse rather than crash the batch on the unique constraint.
        taken_positions = set(
            TaskEventLog.objects.filter(
                source__in={e.position.source for e in events},
                offset__in={e.position.offset for e in events},
            ).values_list("source", "partition", "offset")
        )
        results: list[Applied] = []
        new_logs: list[TaskEventLog] = []
        changed: dict[str, AsyncTask] = {}
        for event in events:
            pos = event.position
            task = tasks.get(event.task_id)
            if event.user_id not in known_users:
                results.append(Applied(event, Outcome.REJECTED, "unknown user"))
                continue
            if task is None:
                results.append(Applied(event, Outcome.REJECTED, "unknown task"))
                continue
            if task.owner_id != event.user_id:
                results.append(Applied(event, Outcome.REJECTED, "task belongs to another user"))
                continue
            previous = seen_ids.get(event.event_id)
            if previous is not None:
                same_position = previous == (pos.source, pos.partition, pos.offset)
                outcome = Outcome.REDELIVERED if same_position else Outcome.DUPLICATE
                results.append(Applied(event, outcome, deliver=is_delivered(event, seen_ids)))
                continue
            if (pos.source, pos.partition, pos.offset) in taken_positions:
                results.append(Applied(event, Outcome.REJECTED, "position used by another event"))
                continue
            seen_ids[event.event_id] = (pos.source, pos.partition, pos.offset)
            taken_positions.add((pos.source, pos.partition, pos.offset))
            changed_task = _transition(task, event)
            if changed_task:
                task.last_event_epoch = epoch
                changed[event.task_id] = task
            new_logs.append(
                TaskEventLog(
                    task=task,
                    event_id=event.event_id,
                    event_type=event.event_type,
                    source=pos.source,
                    partition=pos.partition,
                    offset=pos.offset,
                    occurred_at=event.occurred_at,
                    data=event.data,
                    changed_task=changed_task,
                )
            )
            outcome = Outcome.APPLIED if changed_task else Outcome.STALE
            results.append(Applied(event, outcome, deliver=is_delivered(event, seen_ids)))
        TaskEventLog.objects.bulk_create(new_logs)
        now = timezone.now()
        for task in changed.values():
            # One plain UPDATE per changed task, with its final state in this batch.
            # (bulk_update's CASE WHEN expressions cost ~4 ms of CPU per task: py-spy,
            # docs/benchmarks.md.)
            task.updated_at = now
            AsyncTask.objects.filter(pk=task.pk).update(
                **{name: getattr(task, name) for name in _TASK_FIELDS}
            )
    return results


_TASK_FIELDS = [
    "status",
    "progress",
    "message",
    "result",
    "error",
    "started_at",
    "finished_at",
    "updated_at",
    "last_event_source",
    "last_event_partition",
    "last_event_offset",
    "last_event_epoch",
]


def _transition(task: AsyncTask, event: TaskEvent) -> bool:
    """Move ``task`` by ``event`` in memory; return False when the event changes nothing."""
    pos = event.position
    if (
        task.last_event_offset is not None
        and task.last_event_source == pos.source
        and task.last_event_partition == pos.partition
        and pos.offset <= task.last_event_offset
    ):
        return False
    if task.is_finished:
        return False
    data = event.data
    task.status = TaskStatus(EVENT_TYPES[event.event_type].status)
    if event.event_type == "task.started":
        task.started_at = event.occurred_at
    elif event.event_type == "task.progress":
        task.progress = data["progress"]
        task.message = data.get("message", "")[:500]
    elif event.event_type == "task.succeeded":
        task.progress = 100
        task.result = data.get("result")
        task.finished_at = event.occurred_at
    elif event.event_type == "task.failed":
        task.error = data["error"]
        task.finished_at = event.occurred_at
    elif event.event_type == "task.cancelled":
        task.message = data.get("reason", "")[:500]
        task.finished_at = event.occurred_at
    if task.started_at is None and task.status == TaskStatus.RUNNING:
        task.started_at = event.occurred_at
    task.last_event_source = pos.source
    task.last_event_partition = pos.partition
    task.last_event_offset = pos.offset
    return True
