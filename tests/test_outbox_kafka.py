"""The outbox relay against the real broker: a row Kafka refuses is marked failed while
the rows after it go out, and its task gets a task.failed event keyed by its owner, which
the real stack applies and streams to the owner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from django.contrib.auth.models import User

from streaming import conf
from streaming.kafka import producer_config
from tasks import services
from tasks.models import AsyncTask, OutboxMessage
from tasks.outbox import OutboxRelay
from tests.conftest import Stack, open_stream
from tests.kafka_helpers import read_all
from tests.sse import StreamReader, wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db]

BIG = {"blob": "x" * 1_500_000}  # over the 1 MB limits of the producer and the broker


@pytest.fixture
def relay(session_names: dict[str, str], request: pytest.FixtureRequest) -> Iterator[OutboxRelay]:
    running = OutboxRelay(Producer(producer_config(**getattr(request, "param", {}))))
    yield running
    running.close()


def records(topic: str, task_ids: set[str]) -> list[Any]:
    return [
        m
        for m in read_all(topic, conf.get().require_kafka())
        if json.loads(m.value()).get("task_id") in task_ids
    ]


# The client's own size check refuses the record in produce(); with the client's limit
# raised above the broker's, the broker refuses it in the delivery report.
@pytest.mark.parametrize(
    "relay",
    [{}, {"message.max.bytes": 10_000_000}],
    ids=["refused-by-the-client", "refused-by-the-broker"],
    indirect=True,
)
def test_a_row_kafka_refuses_is_marked_failed_while_the_rows_after_it_go_out(
    relay: OutboxRelay, alice: User
) -> None:
    tasks = [
        services.create_task(alice.pk, "demo", params)
        for params in ({"steps": 1}, BIG, {"steps": 2})
    ]
    first, big, last = (OutboxMessage.objects.get(key=str(t.id)) for t in tasks)

    def settled() -> bool:
        relay.run_once(wait=0.2)
        rows = {r.pk: r for r in OutboxMessage.objects.defer("value")}
        return (
            rows[first.pk].sent_at is not None
            and rows[last.pk].sent_at is not None
            and rows[big.pk].failure_reported_at is not None
        )

    wait_until(settled, 60, "rows 1 and 3 sent and row 2's failure reported")
    big.refresh_from_db()
    assert big.sent_at is None and big.failed_at is not None
    assert "MSG_SIZE_TOO_LARGE" in big.last_error
    assert big.attempts == 1

    settings = conf.get()
    ids = {str(t.id) for t in tasks}
    sent = records(settings.TOPIC_REQUESTS, ids)
    assert sorted(json.loads(m.value())["task_id"] for m in sent) == sorted(
        [str(tasks[0].id), str(tasks[2].id)]
    )
    (event,) = records(settings.TOPIC_EVENTS, ids)
    assert event.key() == str(alice.pk).encode()
    envelope = json.loads(event.value())
    assert envelope["event_id"] == str(big.failure_event_id)
    assert (envelope["event_type"], envelope["task_id"]) == ("task.failed", str(tasks[1].id))
    assert (envelope["user_id"], envelope["scope"], envelope["version"]) == (alice.pk, "user", 1)
    assert "MSG_SIZE_TOO_LARGE" in envelope["data"]["error"]
    assert AsyncTask.objects.get(pk=tasks[1].pk).status == "pending"  # until consume_events


@pytest.mark.django_db(transaction=True)
def test_the_owner_sees_a_refused_task_fail_on_the_stream(
    stack: Stack, alice: User, streams: list[StreamReader]
) -> None:
    stream = open_stream(stack, alice)
    streams.append(stream)
    task = services.create_task(alice.pk, "demo", BIG)  # the stack's relay picks it up

    def failed_on_stream(reader: StreamReader) -> bool:
        return any(json.loads(e.data)["task_id"] == str(task.id) for e in reader.of_type("task."))

    stream.wait_for(failed_on_stream, 60)
    (event,) = stream.of_type("task.")
    assert event.event == "task.failed"
    assert "MSG_SIZE_TOO_LARGE" in json.loads(event.data)["data"]["error"]
    task.refresh_from_db()
    assert task.status == "failed" and "MSG_SIZE_TOO_LARGE" in task.error
    assert OutboxMessage.objects.defer("value").get(key=str(task.id)).failed_at is not None
