"""The demo worker, one step at a time: fake Kafka edge and a fake clock."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streaming import tracecontext
from streaming.adapter import adapt
from tasks.demo import DemoParams
from tasks.worker import Running, Worker
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


def test_a_rerun_after_a_crash_reports_the_same_event_ids() -> None:
    """A worker killed mid-task leaves the request uncommitted; the next one re-runs it with
    the first run's event ids, which consume_events then drops as duplicates."""
    task_id = str(uuid.uuid4())
    request = command("task.requested", task_id, 0, kind="demo", params={"steps": 4})
    first, consumer, first_out, clock = make_worker()
    consumer.batches.append([request])
    first.run_once(max_wait=0)
    clock.now += 1.0  # two steps of 500 ms
    first.run_once(max_wait=0)
    clock.now += 0.6
    first.run_once(max_wait=0)
    # Killed here: nothing is committed past the request, so it is read again.
    assert all(offset == 0 for batch in consumer.commits for _, _, offset in batch)

    second, consumer, second_out, clock = make_worker()
    consumer.batches.append([request])
    run_to_completion(second, clock, steps=40)
    ids = [json.loads(p["value"])["event_id"] for p in second_out.produced]
    first_ids = [json.loads(p["value"])["event_id"] for p in first_out.produced]
    assert [t for t, _ in emitted(first_out)] == ["task.started", *["task.progress"] * 2]
    assert ids[: len(first_ids)] == first_ids
    assert len(set(ids)) == len(ids) == 6  # started, 4 steps, succeeded: each its own id


def test_a_request_sent_twice_runs_the_task_once() -> None:
    """The relay delivers at least once: a second record of a running task's request is
    skipped, and both offsets are committed once the task finishes."""
    worker, consumer, producer, clock = make_worker()
    task_id = str(uuid.uuid4())
    params = {"steps": 2, "step_ms": 100}
    consumer.batches.append([command("task.requested", task_id, 0, kind="demo", params=params)])
    worker.run_once(max_wait=0)
    consumer.batches.append([command("task.requested", task_id, 1, kind="demo", params=params)])
    run_to_completion(worker, clock)
    assert [t for t, _ in emitted(producer)] == [
        "task.started",
        "task.progress",
        "task.progress",
        "task.succeeded",
    ]
    assert consumer.commits[-1] == [("task.requests", 0, 2)]


def test_requests_wait_while_the_database_is_down_and_running_tasks_go_on() -> None:
    from django.db import OperationalError

    down = True

    def task_state(task_id: str) -> tuple[str, bool] | None:
        if down:
            raise OperationalError("connection refused")
        return None

    worker, consumer, producer, clock = make_worker()
    worker.task_state = task_state
    worker.sleep = lambda seconds: None
    running = str(uuid.uuid4())
    trace = tracecontext.generate()
    worker.running[running] = Running(
        running, 7, DemoParams(2, 100, None), ("task.requests", 0, 0), trace, due=clock.now
    )
    worker.in_flight[("task.requests", 0)] = {0}
    worker.seen[("task.requests", 0)] = 0
    waiting = str(uuid.uuid4())
    consumer.batches.append(
        [
            command("task.requested", waiting, 1, kind="demo", params={"steps": 1}),
            command("task.cancel_requested", running, 2),
        ]
    )
    worker.run_once(max_wait=0)
    # Not skipped: both records are read again from the request that could not be checked.
    assert consumer.seeks == [("task.requests", 0, 1)]
    assert worker.paused_until > clock.now
    assert emitted(producer) == [("task.progress", {"progress": 50, "message": "step 1/2"})]
    clock.now += 0.1
    consumer.batches.append([command("task.requested", str(uuid.uuid4()), 9, kind="demo")])
    worker.run_once(max_wait=0)  # paused: reads nothing, the running task goes on
    assert [t for t, _ in emitted(producer)][-1] == "task.succeeded"
    assert len(consumer.batches) == 1
    assert consumer.commits[-1] == [("task.requests", 0, 1)]  # not past the unread request

    down = False
    clock.now = worker.paused_until
    consumer.batches[0] = [command("task.requested", waiting, 1, kind="demo", params={"steps": 1})]
    run_to_completion(worker, clock, steps=20)
    assert [t for t, _ in emitted(producer)][-3:] == [
        "task.started",
        "task.progress",
        "task.succeeded",
    ]


def test_a_worker_stopped_while_kafka_is_unreachable_closes_without_committing() -> None:
    worker, consumer, _producer, _clock = make_worker()
    consumer.batches.append([command("task.requested", str(uuid.uuid4()), 0, kind="x")])
    worker.run_once(max_wait=0)
    consumer.commits.clear()
    worker.committed.clear()
    consumer.reachable = False
    worker.close()
    assert consumer.commits == []
    assert consumer.closed


def test_a_fatal_consumer_error_stops_the_worker_for_its_supervisor_to_restart() -> None:
    """A static member fenced after a broker restart gets a consumer error with the code
    _FATAL (and ``fatal()`` false): the consumer is unusable, so the worker must exit rather
    than poll it forever."""

    class Fenced(FakeMessage):
        def error(self) -> KafkaError:  # type: ignore[override]
            return KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer")

    worker, consumer, _producer, _clock = make_worker()
    consumer.batches.append([Fenced("task.requests", 0, 0, None)])
    with pytest.raises(KafkaException, match="fenced"):
        worker.run_once(max_wait=0)
