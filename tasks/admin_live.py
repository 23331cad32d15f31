"""The admin's live parts: a task's status and progress widgets, its event timeline, and a
user's live view. The markup carries what ``frontend/admin/src/live.ts`` needs to keep it
current from the staff stream (docs/events.md, "The staff scope"): each widget its task's
status, progress and position, each timeline row its Kafka position.

Only markup and reads here: cancelling goes through ``tasks.services``, like the API.
"""

from __future__ import annotations

import json
from typing import Final

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from tasks.models import AsyncTask, TaskEventLog

# The stream's path is the public API's (README, docs/events.md); it is served by the
# ASGI router, not by a Django URL, so it cannot be reversed.
STAFF_STREAM: Final = "/api/v1/events/stream?scope=staff"
LIVE_VIEW_TASKS: Final = 50  # the newest tasks a user's live view lists


def _trace_field() -> str | None:
    """The event log's trace id column, where the model has one (it is optional here)."""
    names = {f.name for f in TaskEventLog._meta.get_fields()}
    return next((n for n in ("traceparent", "trace_id") if n in names), None)


def widget(task: AsyncTask, field: str) -> SafeString:
    """A live ``status``, ``progress`` or ``message`` cell of ``task``."""
    attrs = format_html(
        'data-ts-task="{}" data-ts-field="{}" data-status="{}" data-progress="{}" '
        'data-message="{}" data-position="{}"',
        task.id,
        field,
        task.status,
        task.progress,
        task.message,
        task.last_event_id or "",
    )
    if field == "progress":
        return format_html(
            '<span class="ts-live" {}><progress max="100" value="{}">{}%</progress> '
            '<span class="ts-text">{}%</span></span>',
            attrs,
            task.progress,
            task.progress,
            task.progress,
        )
    shown = task.message if field == "message" else task.status
    return format_html(
        '<span class="ts-live" {}><span class="ts-text">{}</span></span>', attrs, shown
    )


def timeline(task: AsyncTask) -> SafeString:
    """The task's events in the order they were applied, each with its Kafka position (with
    the topic's epoch: a re-created topic's offsets start again) and trace id."""
    trace = _trace_field()
    columns = ["event", "position", "occurred at", "changed task", "data"]
    head = format_html_join("", "<th>{}</th>", ((c,) for c in columns))
    if trace is not None:
        head += SafeString('<th data-ts-col="trace">trace id</th>')
    rows = []
    for event in task.events.order_by("id"):
        position = f"{event.source}:{event.partition}:{event.offset}"
        if event.epoch:
            position += f"@{event.epoch}"
        cells = [
            event.event_type,
            position,
            event.occurred_at.isoformat(),
            "yes" if event.changed_task else "no",
            json.dumps(event.data, separators=(",", ":"), ensure_ascii=False),
        ]
        if trace is not None:
            cells.append(getattr(event, trace) or "")
        rows.append(
            format_html(
                '<tr data-position="{}">{}</tr>',
                position,
                format_html_join("", "<td>{}</td>", ((c,) for c in cells)),
            )
        )
    body = (
        SafeString("".join(rows))
        if rows
        else format_html(
            '<tr class="ts-empty"><td colspan="{}">no events yet</td></tr>', len(columns)
        )
    )
    return format_html(
        '<table class="ts-timeline" data-ts-timeline="{}"><thead><tr>{}</tr></thead>'
        "<tbody>{}</tbody></table>",
        task.id,
        head,
        body,
    )


def user_tasks(user_id: int) -> QuerySet[AsyncTask]:
    return AsyncTask.objects.filter(owner_id=user_id).order_by("-created_at")[:LIVE_VIEW_TASKS]


def user_live_view(request: HttpRequest, user_id: int, context: dict[str, object]) -> HttpResponse:
    """A user's newest tasks, live (staff only: the caller checked the permission)."""
    owner = get_object_or_404(get_user_model(), pk=user_id)
    rows = [
        {"task": task, "status": widget(task, "status"), "progress": widget(task, "progress")}
        for task in user_tasks(user_id)
    ]
    return TemplateResponse(
        request,
        "admin/tasks/asynctask/live.html",
        {
            **context,
            "title": f"Live: {owner}'s tasks",
            "owner": owner,
            "rows": rows,
            "stream": f"{STAFF_STREAM}&user={owner.pk}",
            "limit": LIVE_VIEW_TASKS,
        },
    )
