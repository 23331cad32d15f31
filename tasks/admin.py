from __future__ import annotations

import uuid
from datetime import timedelta

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

from tasks import admin_live
from tasks.models import POSITION_FIELDS, PUBLIC_FIELDS, AsyncTask, DeadLetter, OutboxMessage
from tasks.services import CancelRefused, request_cancel


@admin.register(AsyncTask)
class AsyncTaskAdmin(admin.ModelAdmin[AsyncTask]):
    """Tasks, live: their status and progress follow the staff stream while the page is
    open (tasks/admin_live.py, docs/events.md "The staff scope"). Every field is read-only:
    only ``tasks.services`` changes a task, and the cancel action goes through it."""

    list_display = ["id", "kind", "owner_live", "live_status", "live_progress", "age"]
    list_display += ["updated_at"]
    list_filter = ["status", "kind", "created_at"]
    search_fields = ["owner__username", "owner__email", "kind"]
    readonly_fields = [
        "owner_live",
        "live_status",
        "live_progress",
        "live_message",
        *PUBLIC_FIELDS,
        *POSITION_FIELDS,
        "timeline",
    ]
    fieldsets = [
        (None, {"fields": ["id", "owner_live", "kind", "live_status", "live_progress"]}),
        ("Details", {"fields": ["params", "live_message", "result", "error"]}),
        ("Times", {"fields": [f for f in PUBLIC_FIELDS if f.endswith("_at")]}),
        ("Kafka position of the last event applied", {"fields": list(POSITION_FIELDS)}),
        ("Event timeline", {"fields": ["timeline"]}),
    ]
    list_select_related = ["owner"]
    actions = ["cancel_selected", "open_live_view"]

    @admin.display(description="owner", ordering="owner__username")
    def owner_live(self, obj: AsyncTask) -> str:
        url = reverse("admin:tasks_asynctask_live", args=[obj.owner_id])
        return format_html('{} (<a href="{}">live view</a>)', obj.owner, url)

    @admin.display(description="status", ordering="status")
    def live_status(self, obj: AsyncTask) -> str:
        return admin_live.widget(obj, "status")

    @admin.display(description="progress", ordering="progress")
    def live_progress(self, obj: AsyncTask) -> str:
        return admin_live.widget(obj, "progress")

    @admin.display(description="message")
    def live_message(self, obj: AsyncTask) -> str:
        return admin_live.widget(obj, "message")

    @admin.display(description="events")
    def timeline(self, obj: AsyncTask) -> str:
        return admin_live.timeline(obj)

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: AsyncTask) -> str:
        if timezone.now() - obj.created_at < timedelta(minutes=1):
            return "just now"
        return timesince(obj.created_at)

    @admin.action(description="Cancel selected tasks", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[AsyncTask]) -> None:
        """Each through ``request_cancel``, as the API's cancel: the worker is told, and the
        task ends when its ``task.cancelled`` event arrives."""
        requested = finished = 0
        for task_id, owner_id in queryset.values_list("id", "owner_id"):
            try:
                request_cancel(task_id, owner_id)
            except (CancelRefused, AsyncTask.DoesNotExist):
                finished += 1
                continue
            requested += 1
        if requested:
            self.message_user(request, f"Cancel requested for {requested} task(s).")
        if finished:
            self.message_user(
                request, f"{finished} task(s) had already finished: left as they are.", "warning"
            )

    @admin.action(description="Open the owner's live view", permissions=["view"])
    def open_live_view(
        self, request: HttpRequest, queryset: QuerySet[AsyncTask]
    ) -> HttpResponse | None:
        owners = list(queryset.order_by().values_list("owner_id", flat=True).distinct()[:2])
        if len(owners) != 1:
            self.message_user(
                request, "Select tasks of one owner to open their live view.", "error"
            )
            return None
        return HttpResponseRedirect(reverse("admin:tasks_asynctask_live", args=owners))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tasks are created through the API (tasks.services), with their command

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, object] | None = None
    ) -> HttpResponse:
        context = {**(extra_context or {}), "ts_stream": admin_live.STAFF_STREAM}
        return super().changelist_view(request, context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, object] | None = None,
    ) -> HttpResponse:
        # The task page follows its owner's events only (the staff scope's ``user``).
        task = self.get_object(request, object_id)
        stream = admin_live.STAFF_STREAM
        if task is not None:
            stream += f"&user={task.owner_id}"
        context = {**(extra_context or {}), "ts_stream": stream}
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self) -> list[URLPattern]:
        live = path(
            "live/<int:user_id>/",
            self.admin_site.admin_view(self.live_view),
            name="tasks_asynctask_live",
        )
        return [live, *super().get_urls()]

    def live_view(self, request: HttpRequest, user_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "opts": self.model._meta}
        return admin_live.user_live_view(request, user_id, context)

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
