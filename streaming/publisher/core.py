"""The publisher SDK's records and producer: build, check and send task events.

No Django here, directly or through another module: a Celery or RQ worker, or any Python
process, imports this with only confluent-kafka and pydantic (and orjson, which
``streaming.jsonsafe`` uses) installed. ``tests/test_publisher.py`` checks that importing
it loads no ``django`` module.

A record is checked by the same two rules ``consume_events`` applies (the pydantic models
of ``streaming.schema``, then ``streaming.jsonsafe``) before it is produced, so a mistake is
an ``InvalidEvent`` in the worker, not a dead letter nobody reads.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from pydantic import ValidationError

from streaming import jsonsafe, tracecontext
from streaming.schema import RECORD

if TYPE_CHECKING:
    from streaming.publisher.reporter import TaskReporter, Ticker

logger = logging.getLogger(__name__)

DEFAULT_TOPIC: Final = "task.events"
# consume_events dead-letters a larger value (TASKSTREAM_MAX_EVENT_BYTES, 256 KiB).
DEFAULT_MAX_EVENT_BYTES: Final = 262_144
# At most one progress event per task per this many seconds; the ones between coalesce.
DEFAULT_PROGRESS_INTERVAL: Final = 0.2
TERMINAL: Final = frozenset({"task.succeeded", "task.failed", "task.cancelled"})


class InvalidEvent(ValueError):
    """The event breaks the record contract (docs/events.md); nothing was sent."""


class DeliveryError(RuntimeError):
    """Kafka did not acknowledge one or more events (``failures`` says which)."""

    def __init__(self, message: str, failures: list[DeliveryFailure]) -> None:
        super().__init__(message)
        self.failures = failures


class ReporterFinished(RuntimeError):
    """An event after the task's final event (succeeded, failed or cancelled)."""


@dataclass(frozen=True)
class DeliveryFailure:
    event_id: str
    event_type: str
    task_id: str
    error: str


class Producer(Protocol):
    """The part of ``confluent_kafka.Producer`` the publisher calls (tests fake it)."""

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None: ...
    def poll(self, timeout: float = -1) -> int: ...
    def flush(self, timeout: float = -1) -> int: ...


def build_record(
    event_type: str,
    *,
    user_id: int,
    task_id: str,
    data: dict[str, Any] | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> tuple[str, bytes, dict[str, Any]]:
    """``(key, value, envelope)`` of one event, checked as ``consume_events`` will check it.

    Raises ``InvalidEvent`` naming the problem.
    """
    envelope: dict[str, Any] = {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "version": 1,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "user_id": user_id,
        "task_id": str(task_id),
        "scope": "user",
        "data": {} if data is None else data,
    }
    try:
        model = RECORD.validate_python(envelope)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in error["loc"] if not str(p).startswith("task."))
        raise InvalidEvent(f"{event_type}: {where or 'value'}: {error['msg']}") from None
    envelope["event_id"] = str(model.event_id)
    envelope["task_id"] = str(model.task_id)
    try:
        jsonsafe.check(envelope)
        value = json.dumps(envelope, allow_nan=False, ensure_ascii=False).encode()
    except (jsonsafe.UnsafeJSON, ValueError, TypeError) as exc:
        raise InvalidEvent(f"{event_type}: {exc}") from None
    if len(value) > max_bytes:
        raise InvalidEvent(f"{event_type}: {len(value)} bytes, over the {max_bytes}-byte limit")
    # Keyed by the owner: all of a user's events share a partition (docs/events.md).
    return str(model.user_id), value, envelope


class Publisher:
    """One Kafka producer per worker process, shared by every ``TaskReporter`` in it.

    ``bootstrap_servers`` and ``topic`` default to the environment variables the rest of
    Taskstream reads (``KAFKA_BOOTSTRAP_SERVERS``, ``TASKSTREAM_TOPIC_EVENTS``). Delivery
    errors are counted (``failed``), passed to ``on_error`` (default: logged), and raised
    as ``DeliveryError`` by the next ``flush()``. Thread-safe.

    At exit it flushes what is left (up to 10 s), unless ``flush_at_exit`` is off: a
    process that flushes on its own way out, within its own stop deadline, turns it off.
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        topic: str | None = None,
        producer: Any = None,
        on_error: Callable[[DeliveryFailure], None] | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        config: dict[str, Any] | None = None,
        flush_at_exit: bool = True,
    ) -> None:
        self.topic = topic or os.environ.get("TASKSTREAM_TOPIC_EVENTS") or DEFAULT_TOPIC
        self.max_event_bytes = max_event_bytes
        self.on_error = on_error
        if producer is None:
            servers = bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
            if not servers:
                raise ValueError("no Kafka: pass bootstrap_servers or set KAFKA_BOOTSTRAP_SERVERS")
            from confluent_kafka import Producer as KafkaProducer

            producer = KafkaProducer(
                {
                    "bootstrap.servers": servers,
                    # A retry after a lost ack does not write an event twice.
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    **(config or {}),
                }
            )
        self.producer: Producer = producer
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self._failures: list[DeliveryFailure] = []
        self._lock = threading.Lock()
        self._ticker: Ticker | None = None
        if flush_at_exit:
            # Weakly: a publisher that is gone has nothing to flush.
            atexit.register(_flush_at_exit, weakref.ref(self))

    def send(
        self,
        event_type: str,
        *,
        user_id: int,
        task_id: str,
        data: dict[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        traceparent: str | None = None,
    ) -> str:
        """Check and produce one event; returns its event id. Does not wait for the ack.

        ``traceparent``: the W3C trace context the record carries in its header (a
        ``TaskReporter`` passes its task run's); an invalid one is left out.
        """
        key, value, envelope = build_record(
            event_type,
            user_id=user_id,
            task_id=task_id,
            data=data,
            event_id=event_id,
            occurred_at=occurred_at,
            max_bytes=self.max_event_bytes,
        )
        what = (envelope["event_id"], event_type, envelope["task_id"])
        trace = tracecontext.parse(traceparent)
        headers = [(tracecontext.HEADER, trace.encode())] if trace else None
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    key=key,
                    value=value,
                    headers=headers,
                    on_delivery=self._callback(*what),
                )
                break
            except BufferError:  # the local queue is full: wait for acks, then retry
                self.producer.poll(0.5)
        with self._lock:
            self.sent += 1
        self.producer.poll(0)
        return str(envelope["event_id"])

    def _callback(self, event_id: str, event_type: str, task_id: str) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, _msg: Any) -> None:
            if err is None:
                with self._lock:
                    self.delivered += 1
                return
            failure = DeliveryFailure(event_id, event_type, task_id, str(err))
            with self._lock:
                self.failed += 1
                self._failures.append(failure)
            if self.on_error is not None:
                self.on_error(failure)
            else:
                logger.error(
                    "taskstream: %s %s of task %s not delivered: %s", *vars(failure).values()
                )

        return on_delivery

    def flush(self, timeout: float = 10.0) -> None:
        """Wait for every event sent so far; raise ``DeliveryError`` if any was refused or
        is still unacknowledged after ``timeout``."""
        remaining = self.producer.flush(timeout)
        with self._lock:
            failures, self._failures = self._failures, []
        if remaining or failures:
            raise DeliveryError(
                f"{len(failures)} event(s) refused by Kafka, {remaining} not acknowledged "
                f"after {timeout:.0f} s" + (f"; first: {failures[0].error}" if failures else ""),
                failures,
            )

    def reporter(self, task_id: str, user_id: int, **options: Any) -> TaskReporter:
        from streaming.publisher.reporter import TaskReporter

        return TaskReporter(self, task_id, user_id, **options)

    def _schedule(self, reporter: TaskReporter) -> None:
        from streaming.publisher.reporter import Ticker

        with self._lock:
            if self._ticker is None:
                self._ticker = Ticker()
        self._ticker.add(reporter)

    def flush_all(self, timeout: float = 10.0) -> None:
        """Send every reporter's pending progress, then ``flush``."""
        if self._ticker is not None:
            self._ticker.send_all()
        self.flush(timeout)


def _flush_at_exit(ref: weakref.ref[Publisher]) -> None:
    publisher = ref()
    if publisher is None:
        return
    try:
        publisher.flush_all()
    except Exception as exc:
        logger.error("taskstream: events lost at exit: %s", exc)


IDENTITY_KEY: Final = "taskstream"


def identity_value(task_id: str, user_id: int) -> dict[str, Any]:
    """What a Celery header or an RQ job's meta carries: the Taskstream task and owner."""
    return {"task_id": str(task_id), "user_id": int(user_id)}


def parse_identity(value: Any) -> tuple[str, int] | None:
    """``(task_id, user_id)`` from an ``identity_value``, or None if it is not one."""
    if not isinstance(value, dict):
        return None
    task_id, user_id = value.get("task_id"), value.get("user_id")
    if not isinstance(task_id, str) or type(user_id) is not int:
        return None
    return task_id, user_id


_default: tuple[int, Publisher] | None = None  # (the process that made it, the publisher)
_default_lock = threading.Lock()


def get_publisher() -> Publisher:
    """The process's publisher, made on first use from the environment (Celery, RQ).

    Per process: a child forked after its parent made one (Celery's prefork pool replaces
    children from the main process, which reports revocations) gets its own, since
    librdkafka's threads do not survive a fork.
    """
    global _default
    with _default_lock:
        if _default is None or _default[0] != os.getpid():
            _default = (os.getpid(), Publisher())
        return _default[1]


def set_publisher(publisher: Publisher | None) -> None:
    """Use ``publisher`` in this process (``None``: make one from the environment)."""
    global _default
    with _default_lock:
        _default = None if publisher is None else (os.getpid(), publisher)
