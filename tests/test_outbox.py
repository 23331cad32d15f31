"""The outbox relay against a fake producer: rows go out in order, once, and only an
acknowledged row is marked sent."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from tasks import services
from tasks.models import OutboxMessage
from tasks.outbox import OutboxRelay
from tests.fakes import FakeProducer

pytestmark = pytest.mark.django_db


def test_acknowledged_rows_are_marked_sent_in_order(alice: User) -> None:
    first = services.create_task(alice.pk, "demo", {})
    second = services.create_task(alice.pk, "demo", {})
    producer = FakeProducer()
    relay = OutboxRelay(producer)  # type: ignore[arg-type]
    assert relay.run_once(wait=0) == 2
    assert [json.loads(p["value"])["task_id"] for p in producer.produced] == [
        str(first.id),
        str(second.id),
    ]
    assert [p["key"] for p in producer.produced] == [str(first.id), str(second.id)]
    assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()
    assert relay.run_once(wait=0) == 0
    assert len(producer.produced) == 2


def test_rows_stay_pending_and_are_not_produced_twice_while_kafka_is_down(alice: User) -> None:
    services.create_task(alice.pk, "demo", {})
    producer = FakeProducer(unacked_on_flush=1)  # never acknowledges: the broker is down
    relay = OutboxRelay(producer)  # type: ignore[arg-type]
    for _ in range(3):
        assert relay.run_once(wait=0) == 0
    assert len(producer.produced) == 1
    assert OutboxMessage.objects.get().sent_at is None


def test_a_failed_delivery_is_recorded_and_retried_after_a_backoff(alice: User) -> None:
    services.create_task(alice.pk, "demo", {})
    producer = FakeProducer(unacked_on_flush=1)
    now = timezone.now()
    relay = OutboxRelay(producer, clock=lambda: now)  # type: ignore[arg-type]
    relay.run_once(wait=0)
    producer.produced[0]["on_delivery"]("Local: Message timed out", None)
    relay.run_once(wait=0)  # records the failure
    row = OutboxMessage.objects.get()
    assert row.attempts == 1
    assert "timed out" in row.last_error
    assert row.sent_at is None and row.failed_at is None
    assert row.next_attempt_at == now + timedelta(seconds=1)
    relay.run_once(wait=0)
    assert len(producer.produced) == 1  # not before its backoff
    now += timedelta(seconds=1)
    relay.run_once(wait=0)
    assert len(producer.produced) == 2
