"""The demo worker, one step at a time: fake Kafka edge and a fake clock."""

from __future__ import annotations

import json
import uuid
from typing import Any

from streaming.adapter import adapt
from tasks.worker import Worker
from tests.fakes import FakeConsumer, FakeMessage, FakeProducer, record


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def command(name: str, task_id: str, offset: int, **extra: Any) -> FakeMessage:
    value = {"command": name, "version": 1, "task_id": task_id, "user_id": 7, **extra}
    return FakeMessage("task.requests", 0, offset, json.dumps(value).encode(), task_id.encode())


def make_worker(
    state: dict[str, tuple[str, bool]] | None = None,
) -> tuple[Worker, FakeConsumer, FakeProducer, Clock]:
    consumer, producer, clock = FakeConsumer(), FakeProducer(), Clock()
    worker = Worker(
        consumer,  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        "task.events",
        clock=clock,
        task_state=lambda task_id: (state or {}).get(task_id),
    )
    return worker, consumer, producer, clock


def emitted(producer: FakeProducer) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for offset, item in enumerate(producer.produced):
        # Every record the worker writes is valid for the adapter (docs/events.md).
        event = adapt(record(json.loads(item["value"]), offset=offset, key=item["key"].encode()))
        out.append((event.event_type, event.data))
    return out


def run_to_completion(worker: Worker, clock: Clock, steps: int = 20) -> None:
    for _ in range(steps):
        clock.now += 0.1
        worker.run_once(max_wait=0)


def test_a_demo_task_reports_started_progress_and_succeeded() -> None:
    worker, consumer, producer, clock = make_worker()
    task_id = str(uuid.uuid4())
    consumer.batches.append(
        [command("task.requested", task_id, 5, kind="demo", params={"steps": 4, "step_ms": 100})]
    )
    worker.run_once(max_wait=0)
    # Running: the commit may not pass the request, so a crash now re-runs the task.
    assert all(offset <= 5 for batch in consumer.commits for _, _, offset in batch)
    run_to_completion(worker, clock)
    assert emitted(producer) == [
        ("task.started", {}),
        ("task.progress", {"progress": 25, "message": "step 1/4"}),
        ("task.progress", {"progress": 50, "message": "step 2/4"}),
        ("task.progress", {"progress": 75, "message": "step 3/4"}),
        ("task.progress", {"progress": 100, "message": "step 4/4"}),
        ("task.succeeded", {"result": {"steps": 4}}),
    ]
    assert all(p["key"] == "7" for p in producer.produced)
    assert consumer.commits[-1] == [("task.requests", 0, 6)]


def test_fail_at_reports_failed() -> None:
    worker, consumer, producer, clock = make_worker()
    task_id = str(uuid.uuid4())
    consumer.batches.append(
        [
            command(
                "task.requested",
                task_id,
                0,
                kind="demo",
                params={"steps": 3, "step_ms": 0, "fail_at": 2},
            )
        ]
    )
    run_to_completion(worker, clock)
    assert [t for t, _ in emitted(producer)] == ["task.started", "task.progress", "task.failed"]
    assert emitted(producer)[-1][1] == {"error": "failed at step 2"}


def test_cancel_stops_a_running_task() -> None:
    worker, consumer, producer, clock = make_worker()
    task_id = str(uuid.uuid4())
    consumer.batches.append(
        [command("task.requested", task_id, 0, kind="demo", params={"steps": 50, "step_ms": 100})]
    )
    worker.run_once(max_wait=0)
    clock.now += 0.1
    consumer.batches.append([command("task.cancel_requested", task_id, 1)])
    run_to_completion(worker, clock)
    types = [t for t, _ in emitted(producer)]
    assert types[-1] == "task.cancelled"
    assert "task.succeeded" not in types
    assert consumer.commits[-1] == [("task.requests", 0, 2)]


def test_unknown_kind_and_bad_params_fail_with_a_clear_error() -> None:
    worker, consumer, producer, _ = make_worker()
    consumer.batches.append(
        [
            command("task.requested", str(uuid.uuid4()), 0, kind="resize-image", params={}),
            command("task.requested", str(uuid.uuid4()), 1, kind="demo", params={"steps": 0}),
        ]
    )
    worker.run_once(max_wait=0)
    assert emitted(producer) == [
        ("task.failed", {"error": "unknown task kind 'resize-image'"}),
        ("task.failed", {"error": "invalid params: steps must be an integer 1-10000"}),
    ]


def test_a_redelivered_request_for_a_finished_task_is_skipped() -> None:
    task_id = str(uuid.uuid4())
    worker, consumer, producer, _clock = make_worker({task_id: ("succeeded", False)})
    consumer.batches.append([command("task.requested", task_id, 3, kind="demo", params={})])
    worker.run_once(max_wait=0)
    assert producer.produced == []
    assert consumer.commits == [[("task.requests", 0, 4)]]


def test_a_request_cancelled_before_it_started_reports_cancelled() -> None:
    task_id = str(uuid.uuid4())
    worker, consumer, producer, _clock = make_worker({task_id: ("pending", True)})
    consumer.batches.append([command("task.requested", task_id, 0, kind="demo", params={})])
    worker.run_once(max_wait=0)
    assert [t for t, _ in emitted(producer)] == ["task.cancelled"]


def test_an_unfinished_task_is_left_uncommitted_on_close() -> None:
    worker, consumer, _producer, _clock = make_worker()
    consumer.batches.append(
        [command("task.requested", str(uuid.uuid4()), 4, kind="demo", params={"steps": 9})]
    )
    worker.run_once(max_wait=0)
    worker.close()
    assert all(offset <= 4 for batch in consumer.commits for _, _, offset in batch)
    assert consumer.closed
