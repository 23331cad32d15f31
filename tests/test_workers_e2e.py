"""Celery and RQ, end to end (#12): ``POST /api/v1/tasks/`` → outbox → the relay dispatches
to a real Celery worker / RQ worker (Redis broker) → the worker reports through the SDK →
Kafka → consume_events → the owner's SSE stream and the task API.

The Celery and RQ workers (the ``workers`` fixture, tests/conftest.py) start without Django
settings (tests/worker_apps.py); each uses its own Redis database and a queue named for this
session. tests/test_workers_browser.py watches the same tasks on the demo page."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.conftest import Stack, open_stream, start_task, task_api
from tests.sse import SSEEvent, StreamReader

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def of_task(reader: StreamReader, task_id: str) -> list[SSEEvent]:
    return [e for e in reader.of_type("task.") if json.loads(e.data)["task_id"] == task_id]


def finished(task_id: str, event: str) -> Any:
    return lambda r: any(e.event == event for e in of_task(r, task_id))


@pytest.mark.parametrize("kind", ["count-celery", "count-rq"])
def test_a_routed_task_streams_its_progress_and_succeeds(
    workers: Stack, alice: User, kind: str, streams: list[StreamReader]
) -> None:
    stream = open_stream(workers, alice)
    streams.append(stream)
    task_id = start_task(workers, alice, kind, {"steps": 4, "step_ms": 250})

    stream.wait_for(finished(task_id, "task.succeeded"), 60)
    received = of_task(stream, task_id)
    assert [e.event for e in received] == [
        "task.started",
        *["task.progress"] * 4,
        "task.succeeded",
    ]
    data = [json.loads(e.data)["data"] for e in received]
    assert [d["progress"] for d in data[1:5]] == [25, 50, 75, 100]
    assert data[4]["message"] == "step 4/4"
    assert data[5] == {"result": {"steps": 4}}
    task = task_api(workers, alice, "GET", f"{task_id}/").json()
    assert (task["status"], task["progress"], task["result"]) == ("succeeded", 100, {"steps": 4})
    assert task["last_event_id"] == received[-1].id


@pytest.mark.parametrize("kind", ["count-celery", "count-rq"])
def test_a_routed_task_that_raises_fails_with_the_exception_message(
    workers: Stack, alice: User, kind: str, streams: list[StreamReader]
) -> None:
    stream = open_stream(workers, alice)
    streams.append(stream)
    task_id = start_task(workers, alice, kind, {"steps": 3, "step_ms": 50, "fail_at": 2})

    stream.wait_for(finished(task_id, "task.failed"), 60)
    received = of_task(stream, task_id)
    assert received[0].event == "task.started"
    assert received[-1].event == "task.failed"
    assert json.loads(received[-1].data)["data"] == {"error": "failed at step 2"}
    assert "task.succeeded" not in [e.event for e in received]
    task = task_api(workers, alice, "GET", f"{task_id}/").json()
    assert (task["status"], task["error"]) == ("failed", "failed at step 2")


@pytest.mark.parametrize("kind", ["count-celery", "count-rq"])
def test_cancelling_a_running_routed_task_stops_it_with_task_cancelled(
    workers: Stack, alice: User, kind: str, streams: list[StreamReader]
) -> None:
    stream = open_stream(workers, alice)
    streams.append(stream)
    task_id = start_task(workers, alice, kind, {"steps": 100, "step_ms": 300})
    stream.wait_for(lambda r: any(e.event == "task.progress" for e in of_task(r, task_id)), 60)

    assert task_api(workers, alice, "POST", f"{task_id}/cancel/").status_code == 202
    stream.wait_for(finished(task_id, "task.cancelled"), 60)
    task = task_api(workers, alice, "GET", f"{task_id}/").json()
    assert task["status"] == "cancelled"
    assert task["progress"] < 100


def test_cancelling_a_queued_rq_job_reports_task_cancelled_without_running_it(
    workers: Stack, alice: User, streams: list[StreamReader]
) -> None:
    stream = open_stream(workers, alice)
    streams.append(stream)
    # The RQ worker runs one job at a time: the second waits in the queue behind the first.
    busy = start_task(workers, alice, "count-rq", {"steps": 100, "step_ms": 300})
    stream.wait_for(lambda r: any(e.event == "task.progress" for e in of_task(r, busy)), 60)
    queued = start_task(workers, alice, "count-rq", {"steps": 2, "step_ms": 50})

    assert task_api(workers, alice, "POST", f"{queued}/cancel/").status_code == 202
    stream.wait_for(finished(queued, "task.cancelled"), 60)
    assert [e.event for e in of_task(stream, queued)] == ["task.cancelled"]  # never started
    assert task_api(workers, alice, "GET", f"{queued}/").json()["status"] == "cancelled"

    assert task_api(workers, alice, "POST", f"{busy}/cancel/").status_code == 202
    stream.wait_for(finished(busy, "task.cancelled"), 60)
    assert [e.event for e in of_task(stream, queued)] == ["task.cancelled"]
