"""The demo worker: executes `task.requests` and reports progress to `task.events`.

It stands in for real workers, which publish the same records (docs/events.md). Tasks run
concurrently on one thread: each running task has a due time for its next step, and
``run_once`` waits for Kafka commands only until the earliest step is due. A request's
offset is committed once its task has finished and its last event is acknowledged, so a
crash re-runs unfinished tasks instead of losing them.

A re-run, or a request the outbox relay sent twice (it delivers at least once), reports
nothing twice: each event's id is derived from the task, the event type and the step
(``event_id``), so the re-run's events carry the ids of the first run's, and
``consume_events`` drops them as duplicates (tasks/apply.py). The client sees every step
once, and the task's final state once. While PostgreSQL is unreachable the worker keeps
running its tasks and reads no new request (the one it could not check is read again).
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
from django.db import InterfaceError, OperationalError

from streaming import conf, metrics, tracecontext
from streaming.kafka import (
    consumer_config,
    next_batch,
    producer_config,
    raise_if_fatal,
    rewind,
    subscribe,
)
from streaming.loop import StopFlag, run_loop
from streaming.publisher import Publisher
from tasks.demo import BadParams, DemoParams
from tasks.models import AsyncTask

logger = logging.getLogger(__name__)

# Namespace of the worker's event ids (uuid5 of task, type and step: ``event_id``).
EVENT_ID_NAMESPACE = uuid.UUID("0b7e8c52-4f3d-4c1e-9d7a-58e2a6f4b913")
# The database is unreachable: how long the worker waits before reading requests again.
DB_RETRY_FIRST = 0.2
DB_RETRY_MAX = 5.0
# How long the loop waits for acks before committing finished requests (postponed if not
# all acked), and how long a worker told to stop waits for them.
COMMIT_FLUSH_SECONDS = 0.5
STOP_FLUSH_SECONDS = 3.0


def event_id(task_id: str, event_type: str, step: int = 0) -> str:
    """The id of a task's event: the same in every run of the task, so a re-run's events
    are duplicates of the first run's (``step`` tells progress events apart)."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{task_id}/{event_type}/{step}"))


class DatabaseDown(Exception):
    """The task's state could not be read: the request is read again later."""


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
    sleep: Callable[[float], None] = time.sleep
    # Tasks whose state says they must not run (finished, or cancel requested).
    task_state: Callable[[str], tuple[str, bool] | None] = field(default=lambda _id: None)
    running: dict[str, Running] = field(default_factory=dict)
    # Per partition: offsets of requests not finished yet, and the highest offset seen.
    in_flight: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    seen: dict[tuple[str, int], int] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    # While the database is down: no new request is read before this (``clock`` time).
    paused_until: float = 0.0
    db_retry: float = DB_RETRY_FIRST
    # The publisher SDK, on the worker's own producer (flushed before each commit).
    publisher: Publisher = field(init=False)

    def __post_init__(self) -> None:
        # ``close`` flushes, within the worker's stop deadline: no second flush at exit.
        self.publisher = Publisher(
            producer=self.producer, topic=self.events_topic, flush_at_exit=False
        )

    def run_once(self, max_wait: float = 0.5) -> None:
        now = self.clock()
        next_due = min((r.due for r in self.running.values()), default=now + max_wait)
        timeout = max(0.0, min(max_wait, next_due - now))
        if now < self.paused_until:
            self.sleep(min(timeout, self.paused_until - now))
        else:
            self._read_requests(timeout)
        self._run_due_steps()
        self.producer.poll(0)
        self._commit_finished()

    def _read_requests(self, timeout: float) -> None:
        batch = next_batch(self.consumer, 100, timeout)
        for index, message in enumerate(batch):
            err = message.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise_if_fatal(err)  # e.g. fenced after a broker restart: exit, be restarted
                logger.warning("worker consumer error: %s", err)
                continue
            try:
                self._handle(message)
            except DatabaseDown as exc:
                # Read this request and the ones after it again once the database is back;
                # running tasks go on meanwhile.
                rewind(self.consumer, [m for m in batch[index:] if m.error() is None])
                self.paused_until = self.clock() + self.db_retry
                logger.warning(
                    "worker: the database is unreachable (%s); reading requests again in %.1f s",
                    exc,
                    self.db_retry,
                )
                self.db_retry = min(DB_RETRY_MAX, self.db_retry * 2)
                return
        if batch:
            self.db_retry = DB_RETRY_FIRST

    def _handle(self, message: Any) -> None:
        position = (message.topic(), message.partition(), message.offset())
        try:
            command = json.loads(message.value())
            name = command["command"]
            task_id = str(uuid.UUID(command["task_id"]))
            user_id = int(command["user_id"])
        except (ValueError, KeyError, TypeError) as exc:
            self._seen(position)
            logger.error("worker skipped a malformed command at %s: %s", position, exc)
            return
        if name == "task.requested":
            # A run is a span of the request's trace when the request carried one (any
            # producer of task.requests may set the header), else the root of a new trace.
            parent = tracecontext.from_headers(message.headers())
            trace = tracecontext.child(parent) if parent else tracecontext.generate()
            self._request(command, task_id, user_id, position, trace)
            return
        self._seen(position)
        if name == "task.cancel_requested":
            running = self.running.pop(task_id, None)
            if running is not None:
                self._emit(running, "task.cancelled", {"reason": "cancelled"})
                self._finish(running)
            return
        logger.error("worker skipped unknown command %r at %s", name, position)

    def _request(
        self,
        command: dict[str, Any],
        task_id: str,
        user_id: int,
        position: tuple[str, int, int],
        trace: str,
    ) -> None:
        if task_id in self.running:
            # The relay sent the request twice (a crash between Kafka's ack and marking the
            # row): the task runs once. Its offset is committed with the running one's.
            self._seen(position)
            logger.info("worker: task %s is already running (request re-sent)", task_id)
            return
        try:
            state = self.task_state(task_id)
        except (OperationalError, InterfaceError) as exc:
            raise DatabaseDown(str(exc).strip()) from exc
        self._seen(position)
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
        self.in_flight.setdefault((position[0], position[1]), set()).add(position[2])

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
            self._emit(run, "task.progress", {"progress": progress, "message": message}, run.step)
            if run.step >= p.steps:
                self._emit(run, "task.succeeded", {"result": {"steps": p.steps}})
                self._finish(run)
            else:
                run.due += p.step_ms / 1e3

    def _seen(self, position: tuple[str, int, int]) -> None:
        key = (position[0], position[1])
        self.seen[key] = max(self.seen.get(key, -1), position[2])

    def _finish(self, run: Running) -> None:
        self.running.pop(run.task_id, None)
        topic, partition, offset = run.position
        self.in_flight.get((topic, partition), set()).discard(offset)

    def _emit(self, run: Running, event_type: str, data: dict[str, Any], step: int = 0) -> None:
        self._send(run.user_id, run.task_id, run.traceparent, event_type, data, step)

    def _send(
        self,
        user_id: int,
        task_id: str,
        trace: str,
        event_type: str,
        data: dict[str, Any],
        step: int = 0,
    ) -> None:
        # The SDK checks the record against the contract and keys it by user (all of a
        # user's events share one partition, so one position per source is an exact resume
        # point). The id is the task's, type's and step's, the same in a re-run
        # (``event_id``). The demo's steps are at least 10 ms apart (the API's floor), so
        # it reports every step: no TaskReporter rate limit here.
        self.publisher.send(
            event_type,
            user_id=user_id,
            task_id=task_id,
            data=data,
            traceparent=trace,
            event_id=event_id(task_id, event_type, step),
        )
        metrics.WORKER_EVENTS.labels(event_type).inc()

    def _commit_finished(self, flush_timeout: float = COMMIT_FLUSH_SECONDS) -> None:
        offsets: list[TopicPartition] = []
        for key, highest in self.seen.items():
            pending = self.in_flight.get(key)
            safe = min(pending) if pending else highest + 1
            if safe > self.committed.get(key, -1):
                offsets.append(TopicPartition(key[0], key[1], safe))
        if not offsets:
            return
        # Events go out before the request is marked done: a crash in between re-runs the
        # task, whose events are then duplicates (``event_id``), never skips it. A short
        # wait: while Kafka is down the loop goes on (and sees SIGTERM), commits postponed.
        if self.producer.flush(flush_timeout):
            logger.debug("worker: events not yet acknowledged; commit postponed")
            return
        # Asynchronous: a commit never blocks the loop (a synchronous one waits about 10 s
        # for a coordinator that is down, then fails). One that is lost only makes the next
        # worker read finished requests again, which it skips or re-runs as duplicates.
        self.consumer.commit(offsets=offsets, asynchronous=True)
        for tp in offsets:
            self.committed[(tp.topic, tp.partition)] = tp.offset

    def close(self, timeout: float = STOP_FLUSH_SECONDS) -> None:
        """Stop within about 1 s + ``timeout`` (Kafka up) or 1 s + the session timeout,
        10 s (Kafka down), so within the supervisor's 15 s whatever Kafka does."""
        for run in list(self.running.values()):
            # Leave unfinished tasks uncommitted: the next worker re-runs them.
            logger.info("worker stopping with task %s at step %d", run.task_id, run.step)
        if not self.kafka_reachable():
            # Nothing would be acknowledged; a commit would hold close() for the session
            # timeout. The requests are read again: finished ones skipped, others re-run.
            logger.warning("worker stopping: Kafka unreachable; nothing flushed or committed")
        elif self.producer.flush(timeout):
            logger.warning("worker stopping: events not acknowledged; their requests are re-run")
        else:
            self._commit_finished(flush_timeout=0)
        # Waits for a commit still in flight: up to session.timeout.ms if Kafka is down.
        self.consumer.close()

    def kafka_reachable(self) -> bool:
        """Whether a broker answers within a second."""
        try:
            self.consumer.list_topics(timeout=1.0)
        except KafkaException:
            return False
        return True


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
