"""The outbox relay against a producer that refuses: a row Kafka refuses for good is
marked failed and its task is failed through a task.failed event; transient failures back
off per row; neither holds up the rows after it. Pure unit at the broker edge."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from django.contrib.auth.models import User
from django.db import connection

from streaming import conf
from streaming.adapter import adapt
from tasks import services
from tasks.apply import Outcome, apply_events
from tasks.models import AsyncTask, OutboxMessage, TaskStatus
from tasks.outbox import Failure, OutboxRelay
from tests.fakes import FakeMessage, FakeProducer

pytestmark = pytest.mark.django_db

START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class RefusingProducer(FakeProducer):
    """Acks everything except the commands ``refuse`` names by task id: their error is
    raised by ``produce`` (``sync``) or reported to the delivery callback."""

    refuse: dict[str, KafkaError | str] = field(default_factory=dict)
    sync: bool = True
    full_after: int | None = None  # raise BufferError once this many records are queued

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        if self.full_after is not None and len(self.produced) >= self.full_after:
            raise BufferError("Local: Queue full")
        record = json.loads(value)
        err = self.refuse.get(record["task_id"]) if "command" in record else None
        if err is None:
            return super().produce(topic, value, key, **kwargs)
        if self.sync:
            raise KafkaException(err)
        self.produced.append({"topic": topic, "value": value, "key": key, **kwargs})
        kwargs["on_delivery"](err, None)

    def records(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p["value"]) for p in self.produced if p["topic"] == topic]


def relay_with(producer: FakeProducer, clock: Clock | None = None) -> OutboxRelay:
    return OutboxRelay(producer, clock=clock or Clock())  # type: ignore[arg-type]


def three_tasks(user: User) -> list[AsyncTask]:
    return [services.create_task(user.pk, "demo", {"n": n}) for n in range(3)]


def requested(producer: RefusingProducer) -> list[str]:
    return [r["task_id"] for r in producer.records(conf.get().TOPIC_REQUESTS)]


def row_of(task: AsyncTask) -> OutboxMessage:
    return OutboxMessage.objects.get(key=str(task.id))


@pytest.mark.parametrize("sync", [True, False], ids=["raised-by-produce", "delivery-report"])
def test_a_refused_row_is_marked_failed_and_the_rows_after_it_go_out(
    alice: User, sync: bool
) -> None:
    first, big, last = three_tasks(alice)
    producer = RefusingProducer(
        refuse={str(big.id): KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)}, sync=sync
    )
    relay = relay_with(producer)
    assert relay.run_once(wait=0) == 2
    assert requested(producer)[-1] == str(last.id)
    assert row_of(first).sent_at is not None and row_of(last).sent_at is not None
    row = row_of(big)
    assert row.sent_at is None and row.failed_at is not None
    assert "MSG_SIZE_TOO_LARGE" in row.last_error
    assert row.attempts == 1 and row.failure_event_id is not None


def test_the_task_of_a_refused_request_gets_one_task_failed_event_keyed_by_its_owner(
    alice: User,
) -> None:
    _, big, _ = three_tasks(alice)
    producer = RefusingProducer(refuse={str(big.id): KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)})
    relay = relay_with(producer)
    relay.run_once(wait=0)  # marks the row failed
    relay.run_once(wait=0)  # reports it
    events = [p for p in producer.produced if p["topic"] == conf.get().TOPIC_EVENTS]
    assert len(events) == 1
    assert events[0]["key"] == str(alice.pk)
    event = json.loads(events[0]["value"])
    row = row_of(big)
    assert event["event_id"] == str(row.failure_event_id)
    assert (event["event_type"], event["version"], event["scope"]) == ("task.failed", 1, "user")
    assert (event["user_id"], event["task_id"]) == (alice.pk, str(big.id))
    assert "MSG_SIZE_TOO_LARGE" in event["data"]["error"]
    assert row.failure_reported_at is not None
    relay.run_once(wait=0)
    assert len(producer.produced) == 3  # two requests and one event: nothing again

    # consume_events adapts and applies it like a worker's event: the task ends failed.
    record = FakeMessage(conf.get().TOPIC_EVENTS, 0, 7, events[0]["value"], events[0]["key"])
    (applied,) = apply_events([adapt(record)])
    assert applied.outcome == Outcome.APPLIED
    task = AsyncTask.objects.get(pk=big.pk)
    assert task.status == TaskStatus.FAILED
    assert "MSG_SIZE_TOO_LARGE" in task.error


def test_an_unacknowledged_failure_event_is_sent_again_with_the_same_id(alice: User) -> None:
    _, big, _ = three_tasks(alice)
    clock = Clock()
    producer = RefusingProducer(refuse={str(big.id): KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)})
    relay_with(producer, clock).run_once(wait=0)
    producer.unacked_on_flush = 1  # the broker goes quiet: the event is never acknowledged
    relay_with(producer, clock).run_once(wait=0)
    # A restart (a new relay) while the event was unacknowledged sends it again, same id.
    restarted = relay_with(producer, clock)
    restarted.run_once(wait=0)
    producer.produced[-1]["on_delivery"](KafkaError(KafkaError._MSG_TIMED_OUT), None)
    restarted.run_once(wait=0)
    row = row_of(big)
    assert row.failure_reported_at is None and row.next_attempt_at is not None
    producer.unacked_on_flush = 0
    restarted.run_once(wait=0)
    assert len(producer.records(conf.get().TOPIC_EVENTS)) == 2  # backing off
    clock.advance(60)
    restarted.run_once(wait=0)
    ids = {e["event_id"] for e in producer.records(conf.get().TOPIC_EVENTS)}
    assert ids == {str(row.failure_event_id)}
    assert len(producer.records(conf.get().TOPIC_EVENTS)) == 3
    assert row_of(big).failure_reported_at is not None


def test_transient_failures_back_off_per_row_and_never_hold_up_later_rows(alice: User) -> None:
    slow, *others = three_tasks(alice)
    clock = Clock()
    producer = RefusingProducer(
        refuse={str(slow.id): KafkaError(KafkaError._MSG_TIMED_OUT)}, sync=False
    )
    relay = relay_with(producer, clock)
    relay.backoff_cap = 8.0
    assert relay.run_once(wait=0) == 2
    assert requested(producer) == [str(slow.id), *(str(t.id) for t in others)]
    delays = []
    for _ in range(5):
        row = row_of(slow)
        assert row.failed_at is None and row.sent_at is None
        assert row.next_attempt_at is not None
        delays.append((row.next_attempt_at - clock.now).total_seconds())
        clock.advance(delays[-1] - 0.001)
        relay.run_once(wait=0)  # not yet due
        clock.advance(0.001)
        relay.run_once(wait=0)  # due: produced again, fails again
    assert delays == [1, 2, 4, 8, 8]
    assert requested(producer).count(str(slow.id)) == 6
    row = row_of(slow)
    assert row.attempts == 6 and "_MSG_TIMED_OUT" in row.last_error
    assert not OutboxMessage.objects.filter(failed_at__isnull=False).exists()
    producer.refuse.clear()
    clock.advance(8)
    assert relay.run_once(wait=0) == 1
    assert row_of(slow).sent_at is not None


def test_a_full_producer_queue_fails_no_row(alice: User) -> None:
    tasks = three_tasks(alice)
    producer = RefusingProducer(full_after=1)
    relay = relay_with(producer)
    assert relay.run_once(wait=0) == 1
    assert OutboxMessage.objects.filter(sent_at__isnull=True, attempts=0).count() == 2
    producer.full_after = None  # drained
    assert relay.run_once(wait=0) == 2
    assert requested(producer) == [str(t.id) for t in tasks]


def test_a_row_whose_value_cannot_be_read_is_marked_failed_without_an_event(
    alice: User,
) -> None:
    first = services.create_task(alice.pk, "demo", {})
    with connection.cursor() as cursor:  # written by hand: too deep for Python's json
        cursor.execute(
            "INSERT INTO tasks_outboxmessage (topic, key, value, created_at, attempts,"
            " last_error) VALUES (%s, 'k', %s::jsonb, now(), 0, '')",
            [conf.get().TOPIC_REQUESTS, "[" * 5000 + "]" * 5000],
        )
    last = services.create_task(alice.pk, "demo", {})
    producer = RefusingProducer()
    relay = relay_with(producer)
    assert relay.run_once(wait=0) == 2
    assert requested(producer) == [str(first.id), str(last.id)]
    broken = OutboxMessage.objects.defer("value").get(key="k")
    assert broken.failed_at is not None and "RecursionError" in broken.last_error
    assert broken.failure_event_id is None  # no task to report to
    relay.run_once(wait=0)
    assert len(producer.produced) == 2


def test_a_refused_cancel_is_marked_failed_without_failing_the_task(alice: User) -> None:
    task = services.create_task(alice.pk, "demo", {})
    relay_with(FakeProducer()).run_once(wait=0)
    services.request_cancel(task.id, alice.pk)
    producer = RefusingProducer(refuse={str(task.id): KafkaError(KafkaError.INVALID_RECORD)})
    relay_with(producer).run_once(wait=0)
    relay_with(producer).run_once(wait=0)
    cancel = OutboxMessage.objects.get(failed_at__isnull=False)
    assert cancel.value["command"] == "task.cancel_requested"
    assert cancel.failure_event_id is None
    assert producer.records(conf.get().TOPIC_EVENTS) == []


PERMANENT = [
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError._BAD_MSG,
    KafkaError._INVALID_ARG,
]
TRANSIENT = [
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError._QUEUE_FULL,
]


@pytest.mark.parametrize("code", PERMANENT + TRANSIENT)
def test_errors_are_classified_by_code(code: int) -> None:
    failure = Failure.of(KafkaError(code))
    assert failure.permanent is (code in PERMANENT)
    assert failure.reason.startswith(KafkaError(code).name())


def test_a_fatal_producer_error_is_raised_not_blamed_on_the_row() -> None:
    with pytest.raises(KafkaException):
        Failure.of(KafkaError(KafkaError._FATAL))


class DatabaseDown:
    """Stands in for ``django.db.transaction`` in tasks.outbox: PostgreSQL unreachable."""

    @staticmethod
    def atomic() -> Any:
        from django.db import OperationalError

        raise OperationalError("connection refused")


def test_acks_the_database_could_not_record_are_recorded_later_not_sent_again(
    alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.outbox

    tasks_ = three_tasks(alice)
    producer = RefusingProducer()
    relay = relay_with(producer)
    monkeypatch.setattr(tasks.outbox, "transaction", DatabaseDown)
    with pytest.raises(Exception, match="connection refused"):
        relay.run_once(wait=0)
    # Stopped now, the relay would log and exit cleanly; its rows would be sent again.
    relay.close(timeout=0)
    assert len(relay.in_flight) == 3
    monkeypatch.undo()
    relay.run_once(wait=0)
    assert all(row_of(t).sent_at is not None for t in tasks_)
    assert sorted(requested(producer)) == sorted(str(t.id) for t in tasks_)  # once each
    assert relay.in_flight == {}
