"""Applying task events to task state: the one place a worker's report changes a task.

Idempotent by Kafka position and by event id, because Kafka delivers at least once. A
batch is applied in one transaction with a fixed number of statements, whatever its size
(``consume_events`` applies 500 events at a time):
1. read the tasks it names (locked), and what the event log already holds of its ids and
   positions: two SELECTs;
2. decide every event's outcome and each task's new state in memory (``_transition``);
3. write every new log row in one INSERT and every changed task in one
   ``UPDATE … FROM (VALUES …)`` (on PostgreSQL; other databases, the embedded SQLite,
   take the ORM's path: the same rows, more statements).
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from streaming.events import EVENT_TYPES, TaskEvent
from tasks import postgres
from tasks.delivery import is_delivered
from tasks.models import TERMINAL_STATUSES, AsyncTask, TaskEventLog, TaskStatus

MESSAGE_LENGTH = AsyncTask._meta.get_field("message").max_length or 500


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


# The task columns an event can change, in the order the UPDATE writes them.
STATE_FIELDS = (
    "status",
    "progress",
    "message",
    "result",
    "error",
    "started_at",
    "finished_at",
    "last_event_source",
    "last_event_partition",
    "last_event_offset",
    "last_event_epoch",
)


@dataclass(slots=True)
class TaskRow:
    """The part of a task that events read and change; plain values, not a model."""

    id: Any
    owner_id: int
    status: str
    progress: int
    message: str
    result: Any
    error: str
    started_at: datetime | None
    finished_at: datetime | None
    last_event_source: str
    last_event_partition: int | None
    last_event_offset: int | None
    last_event_epoch: str


def apply_events(events: Sequence[TaskEvent], epoch: str = "") -> list[Applied]:
    """Apply a batch of events in one transaction; return one outcome per event, in order.

    ``epoch`` is the identity of the events' topic (streaming.kafka.topic_epoch), kept with
    the task's last position so that position is a complete stream cursor."""
    if not events:
        return []
    with transaction.atomic():
        tasks = _locked_tasks({e.task_id for e in events})
        logged, taken = _log_entries(events)
        results, new_logs, changed = _decide(events, tasks, logged, taken, epoch)
        if any(a.reason in _MAYBE_NO_USER for a in results):
            results = _name_unknown_users(results)
        _write(new_logs, changed)
    return results


def _locked_tasks(task_ids: set[str]) -> dict[str, TaskRow]:
    if connection.vendor == "postgresql":
        rows = postgres.locked_tasks(sorted(task_ids), ["id", "owner_id", *STATE_FIELDS])
    else:
        rows = list(
            AsyncTask.objects.select_for_update()
            .filter(id__in=task_ids)
            .order_by("id")  # one lock order for every process
            .values_list("id", "owner_id", *STATE_FIELDS)
        )
    return {str(row[0]): TaskRow(*row) for row in rows}


def _log_entries(
    events: Sequence[TaskEvent],
) -> tuple[dict[str, tuple[str, int, int]], set[tuple[str, int, int]]]:
    """What the log holds already: where each of the batch's event ids was recorded, and
    which of its positions are taken. One query; each branch uses a unique index."""
    offsets: dict[tuple[str, int], list[int]] = defaultdict(list)
    for event in events:
        offsets[(event.position.source, event.position.partition)].append(event.position.offset)
    ids = [e.event_id for e in events]
    if connection.vendor == "postgresql":
        found = postgres.log_entries(ids, offsets)
    else:
        match = Q(event_id__in=ids)
        for (source, partition), values in offsets.items():
            match |= Q(source=source, partition=partition, offset__in=values)
        found = list(
            TaskEventLog.objects.filter(match).values_list(
                "event_id", "source", "partition", "offset"
            )
        )
    logged: dict[str, tuple[str, int, int]] = {}
    taken: set[tuple[str, int, int]] = set()
    for event_id, source, partition, offset in found:
        logged[str(event_id)] = (source, partition, offset)
        taken.add((source, partition, offset))
    return logged, taken


def _decide(
    events: Sequence[TaskEvent],
    tasks: dict[str, TaskRow],
    logged: dict[str, tuple[str, int, int]],
    taken: set[tuple[str, int, int]],
    epoch: str,
) -> tuple[list[Applied], list[tuple[TaskRow, TaskEvent, bool]], dict[str, TaskRow]]:
    """Every event's outcome, the log rows to add and the tasks that changed (in memory)."""
    results: list[Applied] = []
    new_logs: list[tuple[TaskRow, TaskEvent, bool]] = []
    changed: dict[str, TaskRow] = {}
    for event in events:
        pos = event.position
        where = (pos.source, pos.partition, pos.offset)
        task = tasks.get(event.task_id)
        if task is None:
            results.append(Applied(event, Outcome.REJECTED, "unknown task"))
            continue
        if task.owner_id != event.user_id:
            results.append(Applied(event, Outcome.REJECTED, "task belongs to another user"))
            continue
        previous = logged.get(event.event_id)
        if previous is not None:
            outcome = Outcome.REDELIVERED if previous == where else Outcome.DUPLICATE
            results.append(Applied(event, outcome, deliver=is_delivered(event, logged)))
            continue
        if where in taken:
            # A position taken by another event id: the topic was rebuilt and its offsets
            # reused. Refuse rather than fail the batch on the unique constraint.
            results.append(Applied(event, Outcome.REJECTED, "position used by another event"))
            continue
        logged[event.event_id] = where
        taken.add(where)
        moved = _transition(task, event)
        if moved:
            task.last_event_epoch = epoch
            changed[event.task_id] = task
        new_logs.append((task, event, moved))
        outcome = Outcome.APPLIED if moved else Outcome.STALE
        results.append(Applied(event, outcome, deliver=is_delivered(event, logged)))
    return results, new_logs, changed


_MAYBE_NO_USER = ("unknown task", "task belongs to another user")


def _name_unknown_users(results: list[Applied]) -> list[Applied]:
    """An event refused because of its task whose user does not exist either is reported
    as the user's absence (one more query, only for batches that hold such events)."""
    asked = {a.event.user_id for a in results if a.reason in _MAYBE_NO_USER}
    known = set(get_user_model().objects.filter(pk__in=asked).values_list("pk", flat=True))
    return [
        Applied(a.event, a.outcome, "unknown user")
        if a.reason in _MAYBE_NO_USER and a.event.user_id not in known
        else a
        for a in results
    ]


def _transition(task: TaskRow, event: TaskEvent) -> bool:
    """Move ``task`` by ``event`` in memory; return False when the event changes nothing."""
    pos = event.position
    if (
        task.last_event_offset is not None
        and task.last_event_source == pos.source
        and task.last_event_partition == pos.partition
        and pos.offset <= task.last_event_offset
    ):
        return False
    if task.status in TERMINAL_STATUSES:
        return False
    data = event.data
    task.status = EVENT_TYPES[event.event_type].status
    if event.event_type == "task.started":
        task.started_at = event.occurred_at
    elif event.event_type == "task.progress":
        task.progress = data["progress"]
        task.message = data.get("message", "")[:MESSAGE_LENGTH]
    elif event.event_type == "task.succeeded":
        task.progress = 100
        task.result = data.get("result")
        task.finished_at = event.occurred_at
    elif event.event_type == "task.failed":
        task.error = data["error"]
        task.finished_at = event.occurred_at
    elif event.event_type == "task.cancelled":
        task.message = data.get("reason", "")[:MESSAGE_LENGTH]
        task.finished_at = event.occurred_at
    if task.started_at is None and task.status == TaskStatus.RUNNING:
        task.started_at = event.occurred_at
    task.last_event_source = pos.source
    task.last_event_partition = pos.partition
    task.last_event_offset = pos.offset
    return True


# --- writing -------------------------------------------------------------------------


def _write(new_logs: list[tuple[TaskRow, TaskEvent, bool]], changed: dict[str, TaskRow]) -> None:
    now = timezone.now()
    if connection.vendor == "postgresql":
        postgres.insert_logs(new_logs, now)
        postgres.update_tasks(list(changed.values()), STATE_FIELDS, now)
        return
    TaskEventLog.objects.bulk_create(
        TaskEventLog(
            task_id=task.id,
            event_id=event.event_id,
            event_type=event.event_type,
            source=event.position.source,
            partition=event.position.partition,
            offset=event.position.offset,
            occurred_at=event.occurred_at,
            data=event.data,
            changed_task=moved,
            traceparent=event.traceparent,
        )
        for task, event, moved in new_logs
    )
    for task in changed.values():
        fields = {name: getattr(task, name) for name in STATE_FIELDS}
        AsyncTask.objects.filter(pk=task.id).update(updated_at=now, **fields)
