"""The outbox relay: produces pending ``OutboxMessage`` rows to Kafka, in id order.

A request only writes a row (in the same transaction as the task), so it never waits for
Kafka. The relay keeps a row until the broker acknowledges it: while Kafka is down rows
wait, and they go out once it is back. Delivery is at least once (a crash between the ack
and marking the row re-sends it); the worker ignores requests for finished tasks.

No row can hold up the rows after it:

- A row Kafka refuses for good (``PERMANENT_CODES``), or whose value cannot be read or
  encoded, is marked failed (``failed_at``, the reason in ``last_error``) and never sent.
  If it is a ``task.requested`` command, the relay then owes its task a ``task.failed``
  event (``failure_event_id``), produced to the events topic keyed by the owner, so
  ``consume_events`` fails the task like any worker event. The event id is fixed when the
  row is marked, so a crash between the ack and ``failure_reported_at`` only repeats the
  event, which ``consume_events`` ignores as a duplicate.
- A row addressed to a Celery or RQ route (``tasks.dispatch``) is handed to that broker
  instead of Kafka, with the same rules: accepted means sent, ``DispatchRefused`` fails it
  for good (and its task), any other error is retried with backoff.
- Any other failure is transient: the row (or its owed event) is retried after an
  exponential backoff (``next_attempt_at``), and rows after it go out meanwhile. Rows are
  therefore sent in id order except that a row waiting out its backoff is overtaken.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from streaming import conf, metrics
from streaming.events import SCHEMA_VERSION, SCOPE_USER
from streaming.kafka import producer_config
from streaming.loop import StopFlag, run_loop
from streaming.publisher import Publisher
from tasks import dispatch
from tasks.models import OutboxMessage

logger = logging.getLogger(__name__)

# Errors that refuse this one record, whatever the state of the cluster: sending the same
# bytes again can only fail again. (``KafkaError.retriable()`` cannot tell: confluent-kafka
# sets it on no produce error, not even on UNKNOWN_TOPIC_OR_PART.)
PERMANENT_CODES = frozenset(
    {
        # Over message.max.bytes: raised by produce() against the client's limit, or in
        # the delivery report against the broker's. The client's default (1,000,000) is
        # below the broker's (1,048,588), so batches always fit and the broker's refusal
        # names a record too large on its own; keep it so if you raise it.
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_MSG,  # the broker found the record corrupt
        KafkaError.INVALID_RECORD,  # the broker's validation refused it (e.g. no key on a
        # compacted topic)
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_EXCEPTION,  # the row's topic is not a valid topic name
        KafkaError._BAD_MSG,
        KafkaError._INVALID_ARG,  # produce() refused its arguments
    }
)
# Everything else is transient and retried with backoff, on purpose also:
# - _MSG_TIMED_OUT, _TRANSPORT, _ALL_BROKERS_DOWN, REQUEST_TIMED_OUT, NOT_LEADER...,
#   NOT_ENOUGH_REPLICAS...: the cluster is down or moving;
# - _UNKNOWN_TOPIC, UNKNOWN_TOPIC_OR_PART, _UNKNOWN_PARTITION, even once the broker says so:
#   topics are created by consume_events and run_worker at start, which may come after the
#   relay; failing every task until then would be worse than waiting;
# - *_AUTHORIZATION_FAILED: an operator's ACL mistake, not the record's;
# - a full local queue (``BufferError``): the relay stops handing rows over until the
#   producer drains.
# _FATAL (the idempotent producer is unusable) is raised: the process restarts with a new
# producer, and the row, which is not at fault, is sent then.

ERROR_MAX = 2000
TASK_ERROR_MAX = 500
# Namespace of the ids of the task.failed events the relay owes (uuid5 of the row).
FAILURE_EVENT_NAMESPACE = uuid.UUID("6a0c4a6e-5a43-4b8e-9c61-3f0f8e5b7d21")

REQUEST, REPORT = "request", "report"
STOP_FLUSH_SECONDS = 5.0  # a relay told to stop waits this long for acks (it has 15 s)
DB_OUTAGES = (OperationalError, InterfaceError)  # PostgreSQL unreachable: wait, retry
DB_RETRY_FIRST, DB_RETRY_MAX = 0.2, 1.0


@dataclass(frozen=True)
class Failure:
    reason: str
    permanent: bool

    @classmethod
    def of(cls, err: Any) -> Failure:
        """Classify a produce error (a ``KafkaError``; anything else is transient)."""
        if isinstance(err, KafkaError):
            if err.code() == KafkaError._FATAL or err.fatal():
                raise KafkaException(err)
            return cls(f"{err.name()}: {err.str()}", err.code() in PERMANENT_CODES)
        return cls(str(err), False)


@dataclass(frozen=True)
class Handed:
    """What the relay knows of a row it handed to the producer (for the results)."""

    kind: str  # REQUEST: the row's own record; REPORT: the task.failed event it owes
    topic: str
    size: int | None
    task_id: str | None
    owner_id: int | None  # set for a task.requested command: its failure is reported
    attempts: int


class QueueFull(Exception):
    pass


@dataclass
class OutboxRelay:
    producer: Producer
    batch_size: int = 200
    # Rows handed over and not acknowledged or failed yet, at most ``max_in_flight``: they
    # are never produced twice while librdkafka still retries them, and during an outage
    # the rest wait in the table, not in the producer's queue.
    max_in_flight: int = 1000
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    clock: Callable[[], datetime] = timezone.now
    # Celery and RQ (tasks.dispatch), made on the first routed row.
    dispatcher: dispatch.Dispatcher | None = None
    # Per run_once: brokers that just failed, with the error; their other rows wait their
    # backoff without each blocking the relay for a connect timeout.
    brokers_down: dict[str, str] = field(default_factory=dict)
    in_flight: dict[int, Handed] = field(default_factory=dict)
    delivered: list[int] = field(default_factory=list)
    failed: dict[int, Failure] = field(default_factory=dict)

    def run_once(self, wait: float = 0.2) -> int:
        """Hand due rows to the producer, wait up to ``wait`` for acks, record the results.

        Returns the number of rows marked sent.
        """
        room = min(self.batch_size, self.max_in_flight - len(self.in_flight))
        self.brokers_down: dict[str, str] = {}
        try:
            for row in self._due_rows(room):
                self._hand_over(row)
        except QueueFull:
            logger.warning("outbox: the producer's queue is full; waiting for it to drain")
        self.producer.poll(wait)
        return self._record_results()

    def _due_rows(self, limit: int) -> list[OutboxMessage]:
        if limit <= 0:
            return []
        owed = Q(failure_event_id__isnull=False, failure_reported_at__isnull=True)
        due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=self.clock())
        return list(
            # The value as text, parsed per row: one unreadable value fails its own row,
            # not the query that fetches the batch.
            OutboxMessage.objects.filter(Q(failed_at__isnull=True) | owed, due)
            .filter(sent_at__isnull=True)
            .exclude(id__in=list(self.in_flight))
            .defer("value")
            .annotate(raw_value=Cast("value", TextField()))
            .order_by("id")[:limit]
        )

    def _hand_over(self, row: OutboxMessage) -> None:
        kind = REQUEST if row.failed_at is None else REPORT
        topic = row.topic if kind == REQUEST else conf.get().TOPIC_EVENTS
        value: Any = None
        try:
            value = json.loads(row.raw_value)  # type: ignore[attr-defined]
            key, encoded = _record(row, kind, value)
        except (TypeError, ValueError, RecursionError) as exc:  # unreadable or unencodable
            self.in_flight[row.id] = _handed(row, kind, topic, value, None)
            self.failed[row.id] = Failure(f"cannot encode the row: {exc!r}", permanent=True)
            return
        self.in_flight[row.id] = _handed(row, kind, topic, value, len(encoded))
        if kind == REQUEST and dispatch.is_route(topic):
            self._dispatch(row.id, topic, value)
            return
        try:
            self.producer.produce(topic, key=key, value=encoded, on_delivery=self._callback(row.id))
        except BufferError:
            del self.in_flight[row.id]
            raise QueueFull from None
        except KafkaException as exc:  # refused before it was queued
            self.failed[row.id] = Failure.of(exc.args[0])
        except (TypeError, ValueError) as exc:  # a key or topic that cannot be encoded
            self.failed[row.id] = Failure(f"cannot produce the row: {exc!r}", permanent=True)

    def _dispatch(self, row_id: int, route: str, value: Any) -> None:
        if self.dispatcher is None:
            events = Publisher(
                producer=self.producer, topic=conf.get().TOPIC_EVENTS, flush_at_exit=False
            )
            self.dispatcher = dispatch.Dispatcher(events)
        system = route.partition(":")[0]
        if system in self.brokers_down:
            self.failed[row_id] = Failure(self.brokers_down[system], permanent=False)
            return
        try:
            self.dispatcher.dispatch(route, value)
        except (dispatch.DispatchRefused, KeyError, TypeError, ValueError) as exc:
            self.failed[row_id] = Failure(f"cannot dispatch the row: {exc!r}", permanent=True)
        except Exception as exc:  # the broker is down or slow: retried with backoff
            self.brokers_down[system] = f"{route}: {type(exc).__name__}: {exc}"
            self.failed[row_id] = Failure(self.brokers_down[system], permanent=False)
        else:
            self.delivered.append(row_id)

    def _callback(self, row_id: int) -> Any:
        def on_delivery(err: Any, _msg: Any) -> None:
            if err is None:
                self.delivered.append(row_id)
            else:
                self.failed[row_id] = Failure.of(err)

        return on_delivery

    def _record_results(self) -> int:
        delivered, self.delivered = self.delivered, []
        failed, self.failed = self.failed, {}
        if not delivered and not failed:
            return 0
        handed = {row_id: self.in_flight[row_id] for row_id in [*delivered, *failed]}
        now = self.clock()
        sent = [i for i in delivered if handed[i].kind == REQUEST]
        reported = [i for i in delivered if handed[i].kind == REPORT]
        try:
            with transaction.atomic():
                if sent:
                    OutboxMessage.objects.filter(id__in=sent).update(
                        sent_at=now, next_attempt_at=None
                    )
                if reported:
                    OutboxMessage.objects.filter(id__in=reported).update(
                        failure_reported_at=now, next_attempt_at=None
                    )
                for row_id, failure in failed.items():
                    self._record_failure(row_id, handed[row_id], failure, now)
        except DB_OUTAGES:
            # Kept, to be recorded once the database is back: a row Kafka acknowledged is
            # not sent again (it stays in flight, so it is not fetched again meanwhile).
            self.delivered[:0] = delivered
            self.failed = failed | self.failed
            raise
        for row_id in handed:
            del self.in_flight[row_id]
        metrics.OUTBOX_SENT.inc(len(sent))
        metrics.OUTBOX_FAILURES_REPORTED.inc(len(reported))
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
        return len(sent)

    def _record_failure(self, row_id: int, handed: Handed, failure: Failure, now: datetime) -> None:
        rows = OutboxMessage.objects.filter(id=row_id, sent_at__isnull=True)
        context = (
            f"outbox row {row_id} (task {handed.task_id}, topic {handed.topic}, "
            f"{handed.size if handed.size is not None else '?'} bytes)"
        )
        if failure.permanent and handed.kind == REQUEST:
            logger.error("%s refused for good, marked failed: %s", context, failure.reason)
            event_id = None
            if handed.owner_id is not None:
                event_id = uuid.uuid5(FAILURE_EVENT_NAMESPACE, f"{row_id}:{handed.task_id}")
            rows.filter(failed_at__isnull=True).update(
                failed_at=now,
                last_error=failure.reason[:ERROR_MAX],
                attempts=F("attempts") + 1,
                next_attempt_at=None,
                failure_event_id=event_id,
            )
            metrics.OUTBOX_REFUSED.inc()
            return
        # Transient, or the owed task.failed event refused (only a misconfigured events
        # topic can refuse so small a record): retried after the backoff, never dropped.
        # ``last_error`` keeps the refusal of a failed row: its task's error is taken from it.
        delay = min(self.backoff_cap, self.backoff_base * 2**handed.attempts)
        retry_at = now + timedelta(seconds=delay)
        what = "task.failed event of " if handed.kind == REPORT else ""
        level = logging.ERROR if failure.permanent else logging.WARNING
        logger.log(
            level, "%s%s not delivered (retry in %.0f s): %s", what, context, delay, failure.reason
        )
        update: dict[str, Any] = {"attempts": F("attempts") + 1, "next_attempt_at": retry_at}
        if handed.kind == REQUEST:
            update["last_error"] = failure.reason[:ERROR_MAX]
        rows.update(**update)
        metrics.OUTBOX_FAILED.inc()

    def close(self, timeout: float = STOP_FLUSH_SECONDS) -> None:
        """Wait up to ``timeout`` for Kafka's acks and record what is known. Rows still
        unacknowledged, or acknowledged while the database is unreachable, stay unsent:
        the next relay sends them again (at least once; the worker runs a task once)."""
        unacked = self.producer.flush(timeout)
        try:
            self._record_results()
        except DB_OUTAGES as exc:
            logger.warning(
                "outbox relay stopping: %d rows acknowledged by Kafka but not marked sent "
                "(database unreachable: %s); they will be sent again",
                len(self.delivered),
                str(exc).strip(),
            )
        if unacked:
            logger.warning("outbox relay stopping: %d rows not acknowledged; sent again", unacked)


def _command(value: Any) -> tuple[str, int] | None:
    """(task id, owner id) of a well-formed ``task.requested`` command, else None."""
    if not isinstance(value, dict) or value.get("command") != "task.requested":
        return None
    user_id = value.get("user_id")
    try:
        task_id = str(uuid.UUID(str(value.get("task_id"))))
    except ValueError:
        return None
    if type(user_id) is not int or user_id <= 0:
        return None
    return task_id, user_id


def _record(row: OutboxMessage, kind: str, value: Any) -> tuple[str, str]:
    """The key and value to produce for ``row``: its own record, or the event it owes."""
    if kind == REQUEST:
        return row.key, json.dumps(value, allow_nan=False)
    command = _command(value)
    if command is None:  # cannot happen: failure_event_id is only set for a command
        raise ValueError("the row's value is not a task.requested command")
    return str(command[1]), json.dumps(_failure_event(row, *command))


def _handed(row: OutboxMessage, kind: str, topic: str, value: Any, size: int | None) -> Handed:
    task_id = value.get("task_id") if isinstance(value, dict) else None
    command = _command(value)
    return Handed(
        kind,
        topic,
        size,
        None if task_id is None else str(task_id),
        None if command is None else command[1],
        row.attempts,
    )


def _failure_event(row: OutboxMessage, task_id: str, user_id: int) -> dict[str, Any]:
    """The task.failed event owed for a refused task.requested row (docs/events.md)."""
    assert row.failed_at is not None
    return {
        "event_id": str(row.failure_event_id),
        "event_type": "task.failed",
        "version": SCHEMA_VERSION,
        "occurred_at": row.failed_at.isoformat(),
        "user_id": user_id,
        "task_id": task_id,
        "scope": SCOPE_USER,
        "data": {"error": f"the task could not be queued: {row.last_error}"[:TASK_ERROR_MAX]},
    }


def run_relay(flag: StopFlag) -> None:
    """The relay process: ``run_once`` until ``flag`` is set (``manage.py relay_outbox``).

    While PostgreSQL is unreachable it waits (checking again every second at most, so
    that SIGTERM is seen) instead of exiting."""
    relay = OutboxRelay(Producer(producer_config()))
    poll = conf.get().OUTBOX_POLL_SECONDS
    retry = DB_RETRY_FIRST

    def step() -> None:
        nonlocal retry
        try:
            sent = relay.run_once(wait=poll)
        except DB_OUTAGES as exc:
            logger.warning(
                "outbox relay: the database is unreachable (%s); retrying in %.1f s",
                str(exc).strip(),
                retry,
            )
            time.sleep(retry)
            retry = min(DB_RETRY_MAX, retry * 2)
            return
        retry = DB_RETRY_FIRST
        if sent == 0 and not relay.in_flight:
            time.sleep(poll)

    run_loop("outbox relay", flag, step, relay.close)
