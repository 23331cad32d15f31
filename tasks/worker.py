"""The demo worker: executes `task.requests` and reports progress to `task.events`.

It stands in for real workers, which publish the same records (docs/events.md). Tasks run
concurrently on one thread: each running task has a due time for its next step, and
``run_once`` waits for Kafka commands only until the earliest step is due. A request's
offset is committed once its task has finished and its last event is acknowledged, so a
crash re-runs unfinished tasks instead of losing them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streaming import conf, metrics, tracecontext
from streaming.kafka import consumer_config, next_batch, producer_config, subscribe
from streaming.loop import StopFlag, run_loop
from streaming.publisher import Publisher
from tasks.demo import BadParams, DemoParams
from tasks.models import AsyncTask

logger = logging.getLogger(__name__)


@dataclass
class Running:
    task_id: str
    user_id: int
    params: DemoParams
    position: tuple[str, int, int]  # the request record, committed once finished
    traceparent: str  # this run's trace context, on every event it reports
    step: int = 0
    due: float = 0.0


@dataclass
class Worker:
    consumer: Consumer
    producer: Producer
    events_topic: str
    clock: Callable[[], float] = time.monotonic
    # Tasks whose state says they must not run (finished, or cancel requested).
    task_state: Callable[[str], tuple[str, bool] | None] = field(default=lambda _id: None)
    running: dict[str, Running] = field(default_factory=dict)
    # Per partition: offsets of requests not finished yet, and the highest offset seen.
    in_flight: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    seen: dict[tuple[str, int], int] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    # The publisher SDK, on the worker's own producer (flushed before each commit).
    publisher: Publisher = field(init=False)

    def __post_init__(self) -> None:
        self.publisher = Publisher(producer=self.producer, topic=self.events_topic)

    def run_once(self, max_wait: float = 0.5) -> None:
        now = self.clock()
        next_due = min((r.due for r in self.running.values()), default=now + max_wait)
        timeout = max(0.0, min(max_wait, next_due - now))
        for message in next_batch(self.consumer, 100, timeout):
            err = message.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                logger.warning("worker consumer error: %s", err)
                continue
            self._handle(message)
        self._run_due_steps()
        self.producer.poll(0)
        self._commit_finished()

    def _handle(self, message: Any) -> None:
        position = (message.topic(), message.partition(), message.offset())
        key = (position[0], position[1])
        self.seen[key] = max(self.seen.get(key, -1), position[2])
        try:
            command = json.loads(message.value())
            name = command["command"]
            task_id = str(uuid.UUID(command["task_id"]))
            user_id = int(command["user_id"])
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("worker skipped a malformed command at %s: %s", position, exc)
            return
        # A run is a span of the request's trace when the request carried one (any producer
        # of task.requests may set the header), else the root of a new trace.
        parent = tracecontext.from_headers(message.headers())
        trace = tracecontext.child(parent) if parent else tracecontext.generate()
        if name == "task.cancel_requested":
            running = self.running.pop(task_id, None)
            if running is not None:
                self._emit(running, "task.cancelled", {"reason": "cancelled"})
                self._finish(running)
            return
        if name != "task.requested":
            logger.error("worker skipped unknown command %r at %s", name, position)
            return
        state = self.task_state(task_id)
        if state is not None:
            status, cancel_requested = state
            if status in ("succeeded", "failed", "cancelled"):
                return  # a redelivered request for a finished task
            if cancel_requested:
                self._send(user_id, task_id, trace, "task.cancelled", {"reason": "cancelled"})
                return
        kind = command.get("kind")
        if kind != "demo":
            error = f"unknown task kind {kind!r}"
            self._send(user_id, task_id, trace, "task.failed", {"error": error})
            return
        try:
            params = DemoParams.parse(command.get("params") or {})
        except BadParams as exc:
            self._send(user_id, task_id, trace, "task.failed", {"error": f"invalid params: {exc}"})
            return
        due = self.clock() + params.step_ms / 1e3
        run = Running(task_id, user_id, params, position, trace, due=due)
        self._emit(run, "task.started", {})
        self.running[task_id] = run
        self.in_flight.setdefault(key, set()).add(position[2])

    def _run_due_steps(self) -> None:
        now = self.clock()
        for run in [r for r in self.running.values() if r.due <= now]:
            run.step += 1
            p = run.params
            if p.fail_at == run.step:
                self._emit(run, "task.failed", {"error": f"failed at step {run.step}"})
                self._finish(run)
                continue
            progress = run.step * 100 // p.steps
            message = f"step {run.step}/{p.steps}"
            self._emit(run, "task.progress", {"progress": progress, "message": message})
            if run.step >= p.steps:
                self._emit(run, "task.succeeded", {"result": {"steps": p.steps}})
                self._finish(run)
            else:
                run.due += p.step_ms / 1e3

    def _finish(self, run: Running) -> None:
        self.running.pop(run.task_id, None)
        topic, partition, offset = run.position
        self.in_flight.get((topic, partition), set()).discard(offset)

    def _emit(self, run: Running, event_type: str, data: dict[str, Any]) -> None:
        self._send(run.user_id, run.task_id, run.traceparent, event_type, data)

    def _send(
        self, user_id: int, task_id: str, trace: str, event_type: str, data: dict[str, Any]
    ) -> None:
        # The SDK checks the record against the contract, keys it by user (all of a user's
        # events share one partition, so one position per source is an exact resume point)
        # and gives it a fresh event id. The demo's steps are at least 10 ms apart (the
        # API's floor), so it reports every step: no TaskReporter rate limit here.
        self.publisher.send(
            event_type, user_id=user_id, task_id=task_id, data=data, traceparent=trace
        )
        metrics.WORKER_EVENTS.labels(event_type).inc()

    def _commit_finished(self) -> None:
        offsets: list[TopicPartition] = []
        for key, highest in self.seen.items():
            pending = self.in_flight.get(key)
            safe = min(pending) if pending else highest + 1
            if safe > self.committed.get(key, -1):
                offsets.append(TopicPartition(key[0], key[1], safe))
        if not offsets:
            return
        # Events go out before the request is marked done: a crash in between re-runs the
        # task (duplicate progress is harmless), never skips it.
        if self.producer.flush(10.0):
            logger.warning("worker: events not yet acknowledged; commit postponed")
            return
        self.consumer.commit(offsets=offsets, asynchronous=False)
        for tp in offsets:
            self.committed[(tp.topic, tp.partition)] = tp.offset

    def close(self) -> None:
        for run in list(self.running.values()):
            # Leave unfinished tasks uncommitted: the next worker re-runs them.
            logger.info("worker stopping with task %s at step %d", run.task_id, run.step)
        self.producer.flush(10.0)
        self._commit_finished()
        self.consumer.close()


def task_state_from_db(task_id: str) -> tuple[str, bool] | None:
    row = AsyncTask.objects.filter(id=task_id).values_list("status", "cancel_requested_at").first()
    if row is None:
        return None
    return row[0], row[1] is not None


def build_worker() -> Worker:
    settings = conf.get()
    consumer = Consumer(consumer_config(settings.WORKER_GROUP))
    subscribe(consumer, [settings.TOPIC_REQUESTS])
    return Worker(
        consumer, Producer(producer_config()), settings.TOPIC_EVENTS, task_state=task_state_from_db
    )


def run_worker(flag: StopFlag) -> None:
    """The worker process: ``run_once`` until ``flag`` is set (``manage.py run_worker``)."""
    worker = build_worker()
    run_loop(f"worker on {conf.get().TOPIC_REQUESTS}", flag, worker.run_once, worker.close)
