"""Routing kinds to Celery or RQ (tasks/dispatch.py): the setting fails loudly on a bad
value, a routed task's command goes to its route through the outbox, and the relay marks
it sent only once the broker accepted it (transient errors retry, a refusal fails the task)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.utils import timezone

from config.settings import env_task_routes
from tasks import dispatch, services
from tasks.models import OutboxMessage
from tasks.outbox import OutboxRelay
from tests.fakes import FakeProducer

ROUTES = {"report": "celery:myapp.tasks.report", "export": "rq:myapp.jobs.export"}


def test_routes_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTES", " report=celery:myapp.tasks.report , export=rq:myapp.jobs.export")
    assert env_task_routes("ROUTES") == ROUTES
    monkeypatch.setenv("ROUTES", "")
    assert env_task_routes("ROUTES") == {}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("report", "is not KIND=celery:TASK_NAME"),
        ("report=dramatiq:x.y", "is not KIND=celery:TASK_NAME"),
        ("Report=celery:x.y", "is not KIND"),
        ("report=celery:", "is not KIND"),
        ("report=celery:a.b,report=rq:c.d", "routed twice"),
    ],
)
def test_a_bad_route_stops_the_process_with_the_variables_name(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("TASKSTREAM_TASK_ROUTES", value)
    with pytest.raises(ImproperlyConfigured, match=f"TASKSTREAM_TASK_ROUTES: .*{problem}"):
        env_task_routes("TASKSTREAM_TASK_ROUTES")


class FakeDispatcher:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.error = error

    def dispatch(self, route: str, command: dict[str, Any]) -> None:
        self.calls.append((route, command))
        if self.error is not None:
            raise self.error


@pytest.mark.django_db
@override_settings(TASKSTREAM_TASK_ROUTES=ROUTES)
def test_a_routed_task_is_handed_to_its_broker_not_to_kafka(alice: User) -> None:
    report = services.create_task(alice.pk, "report", {"rows": 3})
    demo = services.create_task(alice.pk, "demo", {})
    services.request_cancel(report.id, alice.pk)
    assert [row.topic for row in OutboxMessage.objects.order_by("id")] == [
        "celery:myapp.tasks.report",
        "task.requests",
        "celery:myapp.tasks.report",
    ]
    producer, dispatcher = FakeProducer(), FakeDispatcher()
    relay = OutboxRelay(producer, dispatcher=dispatcher)  # type: ignore[arg-type]
    assert relay.run_once(wait=0) == 3
    assert [(route, c["command"], c["task_id"]) for route, c in dispatcher.calls] == [
        ("celery:myapp.tasks.report", "task.requested", str(report.id)),
        ("celery:myapp.tasks.report", "task.cancel_requested", str(report.id)),
    ]
    assert dispatcher.calls[0][1]["params"] == {"rows": 3}
    assert [json.loads(p["value"])["task_id"] for p in producer.produced] == [str(demo.id)]
    assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()


@pytest.mark.django_db
@override_settings(TASKSTREAM_TASK_ROUTES=ROUTES)
def test_a_broker_that_is_down_delays_the_task_and_loses_nothing(alice: User) -> None:
    services.create_task(alice.pk, "export", {})
    now = timezone.now()
    dispatcher = FakeDispatcher(ConnectionError("Error 111 connecting to redis"))
    relay = OutboxRelay(FakeProducer(), dispatcher=dispatcher, clock=lambda: now)  # type: ignore[arg-type]
    assert relay.run_once(wait=0) == 0
    row = OutboxMessage.objects.get()
    assert row.sent_at is None and row.failed_at is None
    assert "rq:myapp.jobs.export: ConnectionError" in row.last_error
    assert row.next_attempt_at == now + timedelta(seconds=1)
    dispatcher.error = None
    now += timedelta(seconds=1)
    assert relay.run_once(wait=0) == 1
    assert len(dispatcher.calls) == 2


@pytest.mark.django_db
@override_settings(TASKSTREAM_TASK_ROUTES=ROUTES)
def test_a_broker_that_is_down_is_tried_once_per_round_not_once_per_row(alice: User) -> None:
    for _ in range(3):
        services.create_task(alice.pk, "export", {})
    services.create_task(alice.pk, "report", {})
    services.create_task(alice.pk, "demo", {})
    dispatcher = FakeDispatcher(ConnectionError("Error 111 connecting to redis"))
    producer = FakeProducer()
    relay = OutboxRelay(producer, dispatcher=dispatcher)  # type: ignore[arg-type]
    assert relay.run_once(wait=0) == 1  # the demo row still goes to Kafka
    # One attempt per broker (RQ, then Celery): a connect timeout is not paid per row.
    assert [route for route, _ in dispatcher.calls] == [
        "rq:myapp.jobs.export",
        "celery:myapp.tasks.report",
    ]
    assert OutboxMessage.objects.filter(sent_at__isnull=True, attempts=1).count() == 4


@pytest.mark.django_db
@override_settings(TASKSTREAM_TASK_ROUTES=ROUTES)
def test_a_refused_dispatch_fails_the_task_through_task_events(alice: User) -> None:
    task = services.create_task(alice.pk, "report", {})
    producer = FakeProducer()
    dispatcher = FakeDispatcher(dispatch.DispatchRefused("cannot dispatch"))
    relay = OutboxRelay(producer, dispatcher=dispatcher)  # type: ignore[arg-type]
    relay.run_once(wait=0)
    relay.run_once(wait=0)  # the owed task.failed event
    row = OutboxMessage.objects.get()
    assert row.failed_at is not None and row.failure_reported_at is not None
    (event,) = [json.loads(p["value"]) for p in producer.produced]
    assert (event["event_type"], event["task_id"]) == ("task.failed", str(task.id))
    assert "cannot dispatch" in event["data"]["error"]
