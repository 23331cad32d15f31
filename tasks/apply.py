"""Applying task events to task state: the one place a worker's report changes a task.

Idempotent by Kafka position and by event id, because Kafka delivers at least once. A
batch is applied in one transaction with a fixed number of statements, whatever its size
(``consume_events`` applies up to ``TASKSTREAM_CONSUMER_BATCH`` events at a time):
1. read the tasks it names (locked), and what the event log already holds of its ids and
   positions;
2. decide every event's outcome and each task's new state in memory (``_transition``);
3. write every new log row in one INSERT and every changed task in one UPDATE, and commit.
On PostgreSQL 1 goes with BEGIN in one round trip and 3 with COMMIT in another
(``tasks.postgres``); other databases, the embedded SQLite, take the ORM's path: the same
rows, more statements.

On PostgreSQL step 1 first assumes the log holds none of the batch (what a live consumer
almost always reads) and skips the log read: the INSERT's unique indexes check the same
thing anyway, and the read was the batch's costliest statement, growing with the log
(random event ids probe the whole index). If the log does hold one (a batch re-read after a
crash or a rebalance, a producer's retry), the INSERT fails on a unique index, nothing of the
attempt stays, and the batch is decided again with the log read.
"""

from __future__ import annotations

import enum
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from streaming.events import EVENT_TYPES, TaskEvent
from tasks import postgres
from tasks.delivery import LoggedPosition, is_delivered, same_position
from tasks.models import TERMINAL_STATUSES, AsyncTask, TaskEventLog, TaskStatus

logger = logging.getLogger(__name__)

MESSAGE_LENGTH = AsyncTask._meta.get_field("message").max_length or 500


class Outcome(enum.Enum):
    APPLIED = "applied"  # new event; the task changed
    STALE = "stale"  # new event, but older than the task's state (or after a final state)
    REDELIVERED = "redelivered"  # this Kafka position was applied before (consumer restart)
    DUPLICATE = "duplicate"  # same event id at another position (a producer retry)
    REJECTED = "rejected"  # can never apply: unknown user or task, wrong owner


class Applied(NamedTuple):
    """One event's outcome (a named tuple: one is built per event, at ingest's rate)."""

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
    the task's last position so that position is a complete stream cursor. (A batch that
    overlaps the one before it: ``tasks.apply_turn``.)"""
    if not events:
        return []
    if connection.vendor != "postgresql":
        return apply_with(events, epoch, _OrmBatch())
    try:
        return apply_with(events, epoch, PostgresBatch(look_up=False))
    except IntegrityError as exc:
        if not isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
            raise
        logger.debug("batch of %d holds logged events; deciding with the log", len(events))
    return apply_with(events, epoch, PostgresBatch(look_up=True))


def apply_with(
    events: Sequence[TaskEvent], epoch: str, batch: PostgresBatch | _OrmBatch
) -> list[Applied]:
    """The batch's events applied with ``batch``'s reads and writes."""
    task_ids = sorted({e.task_id for e in events})
    with batch:
        tasks, found = batch.read(task_ids, events, epoch)
        logged, taken = _log_index(found)
        results, new_logs, changed = _decide(events, tasks, logged, taken, epoch)
        if any(a.reason in _MAYBE_NO_USER for a in results):
            results = _name_unknown_users(results)
        batch.write(new_logs, list(changed.values()), timezone.now(), epoch)
    return results


TASK_COLUMNS = ["id", "owner_id", *STATE_FIELDS]


def task_rows(rows: Sequence[Sequence[Any]]) -> dict[str, TaskRow]:
    """``TASK_COLUMNS`` rows by task id."""
    return {str(row[0]): TaskRow(*row) for row in rows}


class PostgresBatch:
    """The batch's reads and writes as ``tasks.postgres`` statements, two round trips.
    Without ``look_up`` the log is not read (the batch is assumed new): a logged event then
    fails the INSERT on a unique index."""

    def __init__(self, *, look_up: bool) -> None:
        self._look_up = look_up

    def __enter__(self) -> PostgresBatch:
        self._tx = postgres.BatchTransaction()
        self._tx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._tx.__exit__(*exc)

    def read(
        self, task_ids: list[str], events: Sequence[TaskEvent], epoch: str
    ) -> tuple[dict[str, TaskRow], list[tuple[Any, ...]]]:
        """The tasks (locked, in id order: one lock order for every process), and the log
        rows holding any of the events' ids or positions in ``epoch`` (each branch uses a
        unique index)."""
        locked = postgres.locked_tasks(task_ids, TASK_COLUMNS)
        if not self._look_up:
            (rows,) = self._tx.read(locked)
            return task_rows(postgres.task_rows(rows, TASK_COLUMNS)), []
        event_ids, offsets = _ids_and_offsets(events)
        rows, found = self._tx.read(locked, postgres.log_entries(event_ids, offsets, epoch))
        return task_rows(postgres.task_rows(rows, TASK_COLUMNS)), found

    def write(
        self,
        new_logs: list[tuple[TaskRow, TaskEvent, bool]],
        changed: list[TaskRow],
        now: datetime,
        epoch: str,
    ) -> None:
        """Every new log row in one INSERT and every changed task in one UPDATE, then
        commit."""
        statements = []
        if new_logs:
            statements.append(postgres.insert_logs(new_logs, now, epoch))
        if changed:
            statements.append(postgres.update_tasks(changed, STATE_FIELDS, now))
        self._tx.write(*statements)


class _OrmBatch:
    """The same reads and writes through the ORM (the embedded SQLite)."""

    def __enter__(self) -> _OrmBatch:
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._atomic.__exit__(*exc)

    def read(
        self, task_ids: list[str], events: Sequence[TaskEvent], epoch: str
    ) -> tuple[dict[str, TaskRow], list[tuple[Any, ...]]]:
        event_ids, offsets = _ids_and_offsets(events)
        rows = list(
            AsyncTask.objects.select_for_update()
            .filter(id__in=task_ids)
            .order_by("id")
            .values_list(*TASK_COLUMNS)
        )
        match = Q(event_id__in=event_ids)
        for (source, partition), values in offsets.items():
            match |= Q(source=source, partition=partition, offset__in=values, epoch=epoch)
        found = list(
            TaskEventLog.objects.filter(match).values_list(
                "event_id", "source", "partition", "offset", "epoch"
            )
        )
        return task_rows(rows), found

    def write(
        self,
        new_logs: list[tuple[TaskRow, TaskEvent, bool]],
        changed: list[TaskRow],
        now: datetime,
        epoch: str,
    ) -> None:
        TaskEventLog.objects.bulk_create(
            TaskEventLog(
                task_id=task.id,
                event_id=event.event_id,
                event_type=event.event_type,
                source=event.position.source,
                partition=event.position.partition,
                offset=event.position.offset,
                epoch=epoch,
                occurred_at=event.occurred_at,
                data=event.data,
                changed_task=moved,
                traceparent=event.traceparent,
            )
            for task, event, moved in new_logs
        )
        for task in changed:
            fields = {name: getattr(task, name) for name in STATE_FIELDS}
            AsyncTask.objects.filter(pk=task.id).update(updated_at=now, **fields)


def _ids_and_offsets(
    events: Sequence[TaskEvent],
) -> tuple[list[str], dict[tuple[str, int], list[int]]]:
    """What the log read asks for: the events' ids, and their offsets per partition. Built
    only when the log is read (not on the first try of a new batch, the common case)."""
    offsets: dict[tuple[str, int], list[int]] = defaultdict(list)
    for event in events:
        offsets[(event.position.source, event.position.partition)].append(event.position.offset)
    return [e.event_id for e in events], offsets


def _log_index(
    found: list[tuple[Any, ...]],
) -> tuple[dict[str, LoggedPosition], set[LoggedPosition]]:
    """What the log holds already: where each of the batch's event ids was recorded, and
    which positions are taken, each with its epoch (a position of another epoch never
    equals one of the batch's)."""
    logged: dict[str, LoggedPosition] = {}
    taken: set[LoggedPosition] = set()
    for event_id, source, partition, offset, epoch in found:
        logged[str(event_id)] = (source, partition, offset, epoch)
        taken.add((source, partition, offset, epoch))
    return logged, taken


def _decide(
    events: Sequence[TaskEvent],
    tasks: dict[str, TaskRow],
    logged: dict[str, LoggedPosition],
    taken: set[LoggedPosition],
    epoch: str,
) -> tuple[list[Applied], list[tuple[TaskRow, TaskEvent, bool]], dict[str, TaskRow]]:
    """Every event's outcome, the log rows to add and the tasks that changed (in memory)."""
    results: list[Applied] = []
    new_logs: list[tuple[TaskRow, TaskEvent, bool]] = []
    changed: dict[str, TaskRow] = {}
    for event in events:
        pos = event.position
        where = (pos.source, pos.partition, pos.offset, epoch)
        task = tasks.get(event.task_id)
        if task is None:
            results.append(Applied(event, Outcome.REJECTED, "unknown task"))
            continue
        if task.owner_id != event.user_id:
            results.append(Applied(event, Outcome.REJECTED, "task belongs to another user"))
            continue
        previous = logged.get(event.event_id)
        if previous is not None:
            if same_position(previous, event, epoch):
                outcome = Outcome.REDELIVERED
            else:
                outcome = Outcome.DUPLICATE
            results.append(Applied(event, outcome, deliver=is_delivered(event, logged, epoch)))
            continue
        if where in taken:
            # A position of this epoch taken by another event id: a forged or corrupted
            # record (a re-created topic has another epoch). Refuse rather than fail the
            # batch on the unique constraint.
            results.append(Applied(event, Outcome.REJECTED, "position used by another event"))
            continue
        logged[event.event_id] = where
        taken.add(where)
        moved = _transition(task, event, epoch)
        if moved:
            changed[event.task_id] = task
        new_logs.append((task, event, moved))
        outcome = Outcome.APPLIED if moved else Outcome.STALE
        results.append(Applied(event, outcome, deliver=is_delivered(event, logged, epoch)))
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


def _transition(task: TaskRow, event: TaskEvent, epoch: str) -> bool:
    """Move ``task`` by ``event`` (read from the topic in ``epoch``) in memory; return False
    when the event changes nothing. Offsets compare only within one epoch: a re-created
    topic's records come after everything of the old one, whatever their offsets."""
    pos = event.position
    if (
        task.last_event_offset is not None
        and task.last_event_source == pos.source
        and task.last_event_partition == pos.partition
        and task.last_event_epoch in (epoch, "")
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
    task.last_event_epoch = epoch
    return True
