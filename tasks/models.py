"""Tasks, the history of events applied to them, and the outbox that enqueues them."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models

from streaming.cursor import Cursor


class TaskStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})

# What the API shows of a task (tasks/serializers.py, plus its cursor); the admin shows the
# same and the Kafka position, all read-only: only tasks.services changes a task.
PUBLIC_FIELDS = (
    "id",
    "kind",
    "params",
    "status",
    "progress",
    "message",
    "result",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "cancel_requested_at",
)
POSITION_FIELDS = (
    "last_event_source",
    "last_event_partition",
    "last_event_offset",
    "last_event_epoch",
)


class AsyncTask(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tasks"
    )
    kind = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING, db_index=True
    )
    progress = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    message = models.CharField(max_length=500, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # Kafka position of the last event applied; an event at or before it changes nothing.
    last_event_source = models.CharField(max_length=249, blank=True)
    last_event_partition = models.IntegerField(null=True, blank=True)
    last_event_offset = models.BigIntegerField(null=True, blank=True)
    last_event_epoch = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def last_event_id(self) -> str | None:
        """The stream cursor just after this task's last event (usable as
        ``?last_event_id=`` to open a stream that continues from this state)."""
        if self.last_event_offset is None:
            return None
        return str(
            Cursor.at(
                self.last_event_source,
                self.last_event_partition or 0,
                self.last_event_offset,
                self.last_event_epoch,
            )
        )


class TaskEventLog(models.Model):
    """Every event applied to a task, by Kafka position: the task's history and the
    idempotency record (a position or event id seen twice is a redelivery)."""

    # No database-level foreign key: the row is written only by ``tasks.apply``, in the
    # transaction that holds its task locked, so the task exists; the constraint's deferred
    # check cost a tenth of a batch's database time at COMMIT (docs/benchmarks.md). Deleting
    # a task through Django still deletes its events (on_delete runs in Django).
    task = models.ForeignKey(
        AsyncTask, on_delete=models.CASCADE, related_name="events", db_constraint=False
    )
    event_id = models.UUIDField(unique=True)
    event_type = models.CharField(max_length=64)
    source = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    # The topic's identity when the event was applied (``streaming.kafka.topic_epoch``):
    # offsets start again at 0 when the topic is re-created, so a position is complete only
    # with it. Blank on rows logged before it was recorded whose task knew no epoch either,
    # and, by the database's default, on rows the previous release writes during a rollout.
    epoch = models.CharField(max_length=64, blank=True, default="", db_default="")
    occurred_at = models.DateTimeField()
    data = models.JSONField(default=dict)
    applied_at = models.DateTimeField(auto_now_add=True)
    changed_task = models.BooleanField(default=True)
    # The record's W3C trace context (its `traceparent` header); NULL when it had no valid
    # one (the ingest writes the event's value as is, None included, in one INSERT).
    traceparent = models.CharField(max_length=55, null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["source", "partition", "offset"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "partition", "offset", "epoch"], name="unique_event_position"
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_type} @ {self.source}:{self.partition}:{self.offset}@{self.epoch}"


class OutboxMessage(models.Model):
    """A Kafka record written in the same transaction as the change that causes it.

    The relay (``tasks.outbox``) produces pending rows in id order and marks them sent,
    so a request never waits for Kafka and a record is never lost while Kafka is down.
    A row Kafka refuses for good is marked failed instead, and never holds up later rows.
    """

    topic = models.CharField(max_length=249)
    key = models.CharField(max_length=255)
    value = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # After a transient failure: not produced again before this time (exponential backoff).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Refused for good (too large, invalid): never sent; the reason is in last_error.
    failed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # For a failed task.requested row: the id of the task.failed event the relay owes the
    # task (fixed when the row fails, so a re-sent event is a duplicate), and when the
    # broker acknowledged that event.
    failure_event_id = models.UUIDField(null=True, blank=True)
    failure_reported_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"outbox #{self.pk} → {self.topic}"


class DeadLetter(models.Model):
    """A record of the dead-letter topic, as ``manage.py redrive_dead_letters`` last read it
    (``tasks.redrive``): what the admin counts per reason, and the redrive ledger (a record
    redriven once is not redriven again unless asked)."""

    dlq_topic = models.CharField(max_length=249)
    dlq_partition = models.IntegerField()
    dlq_offset = models.BigIntegerField()
    dead_at = models.DateTimeField(db_index=True)
    reason = models.CharField(max_length=1000, db_index=True)
    # Where the record was in task.events (the dead-letter headers), when known.
    source = models.CharField(max_length=249, blank=True)
    source_partition = models.IntegerField(null=True, blank=True)
    source_offset = models.BigIntegerField(null=True, blank=True)
    event_type = models.CharField(max_length=64, blank=True)
    event_id = models.CharField(max_length=64, blank=True)
    task_id = models.CharField(max_length=64, blank=True, db_index=True)
    user_id = models.BigIntegerField(null=True, blank=True)
    redriven_at = models.DateTimeField(null=True, blank=True)
    redrive_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["dlq_topic", "dlq_partition", "dlq_offset"]
        constraints = [
            models.UniqueConstraint(
                fields=["dlq_topic", "dlq_partition", "dlq_offset"], name="unique_dead_letter"
            )
        ]

    def __str__(self) -> str:
        return f"{self.dlq_topic}:{self.dlq_partition}:{self.dlq_offset} ({self.reason})"
