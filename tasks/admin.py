from __future__ import annotations

import uuid
from datetime import timedelta

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.timesince import timesince

from tasks.models import (
    POSITION_FIELDS,
    PUBLIC_FIELDS,
    AsyncTask,
    DeadLetter,
    OutboxMessage,
    TaskEventLog,
)


class TaskEventLogInline(admin.TabularInline[TaskEventLog, AsyncTask]):
    """The task's event history, as applied from Kafka: read-only by design."""

    model = TaskEventLog
    fields = ("event_type", "source", "partition", "offset", "occurred_at", "changed_task", "data")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["source", "partition", "offset"]

    def has_add_permission(self, request: HttpRequest, obj: AsyncTask | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AsyncTask | None = None) -> bool:
        return False


@admin.register(AsyncTask)
class AsyncTaskAdmin(admin.ModelAdmin[AsyncTask]):
    list_display = ["id", "kind", "owner", "status", "progress", "age", "updated_at"]
    list_filter = ["status", "kind", "created_at"]
    search_fields = ["owner__username", "owner__email", "kind"]
    readonly_fields = ["owner", *PUBLIC_FIELDS, *POSITION_FIELDS]
    inlines = [TaskEventLogInline]
    list_select_related = ["owner"]

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: AsyncTask) -> str:
        if timezone.now() - obj.created_at < timedelta(minutes=1):
            return "just now"
        return timesince(obj.created_at)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AsyncTask], search_term: str
    ) -> tuple[QuerySet[AsyncTask], bool]:
        """A UUID searches task ids exactly; anything else searches owner and kind."""
        try:
            task_id = uuid.UUID(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(id=task_id), False


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin[OutboxMessage]):
    """The outbox, read-only: what the relay sent, what waits, and what Kafka refused."""

    list_display = [
        "id",
        "topic",
        "key",
        "created_at",
        "sent_at",
        "failed_at",
        "attempts",
        "next_attempt_at",
        "error",
    ]
    list_filter = [
        "topic",
        ("sent_at", admin.EmptyFieldListFilter),
        ("failed_at", admin.EmptyFieldListFilter),
    ]
    readonly_fields = [
        "topic",
        "key",
        "value",
        "created_at",
        "sent_at",
        "attempts",
        "last_error",
        "next_attempt_at",
        "failed_at",
        "failure_event_id",
        "failure_reported_at",
    ]

    @admin.display(description="last error")
    def error(self, obj: OutboxMessage) -> str:
        return obj.last_error if len(obj.last_error) <= 120 else obj.last_error[:119] + "…"


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin[DeadLetter]):
    """Dead-letter records, as ``manage.py redrive_dead_letters`` last read them, with their
    counts per reason above the list. Read-only: redriving is the command's job."""

    list_display = ["dlq_position", "dead_at", "reason", "source_position", "user_id", "task_id"]
    list_display += ["redriven_at"]
    list_filter = [("redriven_at", admin.EmptyFieldListFilter), "dead_at", "event_type"]
    search_fields = ["reason", "task_id", "event_id"]
    readonly_fields = [f.name for f in DeadLetter._meta.fields]

    @admin.display(description="dead-letter position")
    def dlq_position(self, obj: DeadLetter) -> str:
        return f"{obj.dlq_partition}:{obj.dlq_offset}"

    @admin.display(description="source position")
    def source_position(self, obj: DeadLetter) -> str:
        return f"{obj.source}:{obj.source_partition}:{obj.source_offset}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, object] | None = None
    ) -> HttpResponse:
        counts = (
            DeadLetter.objects.values("reason")
            .annotate(total=Count("id"), waiting=Count("id", filter=Q(redriven_at__isnull=True)))
            .order_by("-total", "reason")
        )
        return super().changelist_view(
            request, {**(extra_context or {}), "reason_counts": list(counts)}
        )
