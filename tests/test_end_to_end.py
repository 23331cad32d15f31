"""End to end against the real services: API → outbox → Kafka → worker → Kafka →
consume_events → Redis channel layer → uvicorn → SSE client. Every process is the real
command, started as a subprocess on the test database and this session's own topics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User

from streaming import conf
from streaming.kafka import topic_epoch
from tasks.models import AsyncTask, OutboxMessage, TaskEventLog, TaskStatus
from tests.conftest import ROOT, Proc, Stack, access_token, free_port, open_stream
from tests.fakes import event_value
from tests.kafka_helpers import produce, read_all
from tests.sse import SSEEvent, StreamReader, wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def task_events(reader: StreamReader, task_id: str) -> list[SSEEvent]:
    return [e for e in reader.of_type("task.") if json.loads(e.data)["task_id"] == task_id]


def has_event(reader: StreamReader, event_id: str) -> bool:
    return any(json.loads(e.data)["event_id"] == event_id for e in reader.of_type("task."))


def create_task(stack: Stack, user: User, params: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{stack.base}/api/v1/tasks/",
        json={"kind": "demo", "params": params},
        headers={"Authorization": f"Bearer {access_token(user)}"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def positions_by_event_id() -> dict[str, str]:
    topic = conf.get().TOPIC_EVENTS
    return {
        json.loads(m.value())["event_id"]: f"{m.topic()}:{m.partition()}:{m.offset()}"
        for m in read_all(topic, conf.get().require_kafka())
        if m.value().startswith(b"{") and "event_id" in json.loads(m.value())
    }


def task_and_stream(
    stack: Stack, user: User, streams: list[StreamReader]
) -> tuple[AsyncTask, StreamReader]:
    """A pending task of ``user`` and an open stream of theirs (closed after the test)."""
    task = AsyncTask.objects.create(owner=user, kind="demo")
    stream = open_stream(stack, user)
    streams.append(stream)
    return task, stream


def test_a_task_reaches_its_owner_in_order_with_real_positions(
    stack: Stack, alice: User, bob: User, streams: list[StreamReader]
) -> None:
    alice_stream = open_stream(stack, alice)
    bob_stream = open_stream(stack, bob)
    streams += [alice_stream, bob_stream]
    headers = alice_stream.response_headers
    assert headers is not None
    assert headers["content-type"].startswith("text/event-stream")
    assert "no-cache" in headers["cache-control"]
    assert headers["x-accel-buffering"] == "no"

    alice_task = create_task(stack, alice, {"steps": 4, "step_ms": 50})["id"]
    bob_task = create_task(stack, bob, {"steps": 2, "step_ms": 50})["id"]

    def finished(task_id: str) -> Any:
        return lambda r: any(e.event == "task.succeeded" for e in task_events(r, task_id))

    alice_stream.wait_for(finished(alice_task), 60)
    bob_stream.wait_for(finished(bob_task), 60)

    received = task_events(alice_stream, alice_task)
    assert [e.event for e in received] == [
        "task.started",
        *["task.progress"] * 4,
        "task.succeeded",
    ]
    assert [json.loads(e.data)["data"].get("progress") for e in received[1:5]] == [25, 50, 75, 100]
    # Each id is the record's real position in Kafka, read back from the topic itself.
    real = positions_by_event_id()
    epoch = topic_epoch(conf.get().TOPIC_EVENTS)
    assert [e.id for e in received] == [
        f"{real[json.loads(e.data)['event_id']]}@{epoch}" for e in received
    ]
    # Isolation: each stream holds only its owner's events.
    assert {json.loads(e.data)["user_id"] for e in alice_stream.of_type("task.")} == {alice.pk}
    assert {json.loads(e.data)["user_id"] for e in bob_stream.of_type("task.")} == {bob.pk}

    task = httpx.get(
        f"{stack.base}/api/v1/tasks/{alice_task}/",
        headers={"Authorization": f"Bearer {access_token(alice)}"},
    ).json()
    assert task["status"] == "succeeded"
    assert task["progress"] == 100
    assert task["last_event_id"] == received[-1].id


def test_bad_credentials_get_401_json_and_no_stream(stack: Stack) -> None:
    reader = StreamReader(
        f"{stack.base}/api/v1/events/stream", {"Authorization": "Bearer forged.token.here"}
    ).start()
    reader.wait_for(lambda r: r.ended, 15)
    assert reader.status == 401
    assert reader.response_headers is not None
    assert reader.response_headers["content-type"] == "application/json"
    assert 'error="invalid_token"' in reader.response_headers["www-authenticate"]
    assert json.loads(reader.body)["code"] == "token_not_valid"
    assert reader.events == []


def test_malformed_records_are_dead_lettered_and_the_next_good_one_is_delivered(
    stack: Stack, alice: User, streams: list[StreamReader]
) -> None:
    task, stream = task_and_stream(stack, alice, streams)
    key = str(alice.pk)
    marker = uuid.uuid4().hex
    good = event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": 42})
    produce(
        conf.get().TOPIC_EVENTS,
        [
            (key, f"{{not json {marker}"),
            (
                key,
                event_value(
                    user_id=alice.pk, task_id=str(task.id), event_type="task.exploded", m=marker
                ),
            ),
            (key, {"event_type": "task.progress", "marker": marker}),
            ("99999999", event_value(user_id=99999999, task_id=str(task.id), m=marker)),
            (key, good),
        ],
    )
    stream.wait_for(lambda r: has_event(r, good["event_id"]), 30)

    def dead_letters() -> list[Any]:
        records = read_all(conf.get().TOPIC_DLQ, conf.get().require_kafka())
        return [m for m in records if marker.encode() in m.value()]

    dead = wait_until(lambda: len(dead_letters()) == 4 and dead_letters(), 30, "4 dead letters")
    # Records of different keys sit in different partitions: compare by content, not order.
    reasons = {m.value(): dict(m.headers())["reason"].decode() for m in dead}
    by_kind = {
        "bad json": next(r for v, r in reasons.items() if v.startswith(b"{not json")),
        "bad type": next(r for v, r in reasons.items() if b"task.exploded" in v),
        "missing": next(r for v, r in reasons.items() if b'"marker"' in v),
        "ghost": next(r for v, r in reasons.items() if b"99999999" in v),
    }
    assert by_kind["bad json"].startswith("not valid JSON")
    assert by_kind["bad type"] == "event_type: unknown event type task.exploded"
    assert by_kind["missing"].startswith("event_id: Field required")
    assert by_kind["ghost"] == "unknown user"
    assert all(dict(m.headers())["source"].decode() == conf.get().TOPIC_EVENTS for m in dead)
    task.refresh_from_db()
    assert task.progress == 42


def test_a_record_delivered_twice_changes_the_task_once(
    stack: Stack, alice: User, streams: list[StreamReader]
) -> None:
    task, stream = task_and_stream(stack, alice, streams)
    key = str(alice.pk)
    once = event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": 10})
    after = event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": 20})
    produce(conf.get().TOPIC_EVENTS, [(key, once), (key, once), (key, after)])
    stream.wait_for(lambda r: has_event(r, after["event_id"]), 30)

    assert [json.loads(e.data)["event_id"] for e in task_events(stream, str(task.id))] == [
        once["event_id"],
        after["event_id"],
    ]
    assert TaskEventLog.objects.filter(event_id=once["event_id"]).count() == 1
    task.refresh_from_db()
    assert task.progress == 20


def test_consume_events_killed_and_restarted_loses_nothing_and_repeats_nothing(
    stack: Stack, alice: User, streams: list[StreamReader]
) -> None:
    task, stream = task_and_stream(stack, alice, streams)
    key = str(alice.pk)
    values = [
        event_value(
            user_id=alice.pk, task_id=str(task.id), data={"progress": n % 101, "message": str(n)}
        )
        for n in range(300)
    ]
    produce(conf.get().TOPIC_EVENTS, [(key, v) for v in values[:150]])
    stream.wait_for(lambda r: len(task_events(r, str(task.id))) >= 20, 30)
    stack.consumer.kill()  # SIGKILL: no shutdown, no final commit
    produce(conf.get().TOPIC_EVENTS, [(key, v) for v in values[150:]])
    stack.consumer.start()
    stack.consumer.wait_log("assigned task.events")

    stream.wait_for(lambda r: len(task_events(r, str(task.id))) >= 300, 90)
    received = task_events(stream, str(task.id))
    assert [json.loads(e.data)["data"]["message"] for e in received] == [str(n) for n in range(300)]
    offsets = [int(e.id.split("@")[0].rsplit(":", 1)[1]) for e in received if e.id]
    assert offsets == sorted(set(offsets))  # strictly increasing: no repeat, no reorder
    assert TaskEventLog.objects.filter(task=task).count() == 300


@pytest.fixture
def down_broker(tmp_path: Path, stack: Stack) -> Iterator[dict[str, Any]]:
    """A broker address with nothing listening yet, and a relay pointed at it. The main
    relay is paused so the outbox row can only leave through the down broker."""
    port, controller = free_port(), free_port()
    env = dict(stack.env)
    env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"
    stack.relay.stop()
    relay = Proc("relay_outbox_down_broker", ["manage.py", "relay_outbox"], env, tmp_path).start()
    relay.wait_log("outbox relay started")
    broker_dir = tmp_path / "broker"
    state = {"port": port, "controller": controller, "dir": broker_dir, "relay": relay}
    yield state
    relay.stop()
    subprocess.run(
        [str(ROOT / "scripts" / "kafka_broker"), "stop", "--dir", str(broker_dir)], check=False
    )
    stack.relay.start()


def test_a_task_created_while_kafka_is_down_is_enqueued_once_it_is_back(
    stack: Stack, alice: User, down_broker: dict[str, Any]
) -> None:
    created = create_task(stack, alice, {"steps": 1})
    row = OutboxMessage.objects.get(key=created["id"])
    assert row.sent_at is None  # the API answered without Kafka; the row waits

    topic = conf.get().TOPIC_REQUESTS
    subprocess.run(
        [
            str(ROOT / "scripts" / "kafka_broker"),
            "start",
            "--dir",
            str(down_broker["dir"]),
            "--port",
            str(down_broker["port"]),
            "--controller-port",
            str(down_broker["controller"]),
            topic,
        ],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
        stdout=subprocess.DEVNULL,
    )
    wait_until(
        lambda: OutboxMessage.objects.get(pk=row.pk).sent_at is not None,
        90,
        "the outbox row to be sent",
    )
    records = read_all(topic, f"127.0.0.1:{down_broker['port']}")
    commands = [json.loads(m.value()) for m in records]
    assert [(c["command"], c["task_id"]) for c in commands] == [("task.requested", created["id"])]
    assert records[0].key() == created["id"].encode()
    assert AsyncTask.objects.get(id=created["id"]).status == TaskStatus.PENDING


@pytest.mark.parametrize(
    ("name", "ready"), [("consumer", "task.events"), ("worker", "task.requests")]
)
def test_sigterm_stops_a_command_cleanly_within_10_seconds(
    stack: Stack, name: str, ready: str
) -> None:
    proc: Proc = getattr(stack, name)
    started = time.monotonic()
    code = proc.stop(timeout=10)  # SIGTERM; a process still alive after 10 s is killed (-9)
    elapsed = time.monotonic() - started
    assert code == 0, proc.log()[-2000:]
    assert elapsed < 10
    assert "stopped" in proc.log()
    proc.start()
    proc.wait_log(f"assigned {ready}")
