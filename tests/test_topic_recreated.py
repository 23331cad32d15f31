"""The events topic deleted and created again under a running deployment (docs/operations.md,
"Re-creating the events topic"), against the real services: the new topic's records, at
offsets the old one used, are applied, stored and streamed; the old topic's are never
replayed as the new one's; a client holding an old cursor is told (``epoch-changed``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User

from streaming import conf
from streaming.kafka import ensure_topics, topic_epoch
from tasks.models import AsyncTask, TaskEventLog
from tests.conftest import Proc, free_port, open_stream
from tests.fakes import event_value
from tests.kafka_helpers import delete_topics_named, produce, read_all, recreate
from tests.sse import StreamReader, wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def topic(run_id: str) -> Iterator[str]:
    name = f"task.events.recreated.{run_id}.{uuid.uuid4().hex[:8]}"
    ensure_topics([name], partitions=3)
    yield name
    delete_topics_named(name)


def messages(reader: StreamReader) -> list[str]:
    return [json.loads(e.data)["data"]["message"] for e in reader.of_type("task.")]


def progress(user: User, task: AsyncTask, n: int, label: str) -> tuple[str, dict[str, Any]]:
    data = {"progress": n, "message": label}
    return str(user.pk), event_value(user_id=user.pk, task_id=str(task.id), data=data)


# How the running consume_events learns that its topic was re-created: by its periodic
# check (the new topic's records are produced once it has exited), or because the new
# records' offsets go back (they are produced at once, and the periodic check is too slow
# to be the one that notices).
NOTICED_BY = {"the periodic check": "0.5", "offsets going back": "600"}


@pytest.mark.parametrize("noticed_by", list(NOTICED_BY))
def test_a_re_created_topic_is_consumed_stored_and_streamed_from_its_first_record(
    stack_env: dict[str, str], tmp_path: Path, alice: User, topic: str, noticed_by: str
) -> None:
    env = {
        **stack_env,
        "TASKSTREAM_TOPIC_EVENTS": topic,
        "TASKSTREAM_CONSUMER_GROUP": f"taskstream-recreated-{uuid.uuid4().hex[:8]}",
        "TASKSTREAM_REDIS_PREFIX": f"ts-recreated-{uuid.uuid4().hex[:8]}",
        "TASKSTREAM_EPOCH_CHECK_SECONDS": NOTICED_BY[noticed_by],
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = Proc("server", ["manage.py", "serve", "--port", str(port)], env, tmp_path)
    consumer = Proc("consume_events", ["manage.py", "consume_events"], env, tmp_path)
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    readers: list[StreamReader] = []
    try:
        server.start()
        consumer.start()
        wait_until(lambda: _up(base), 60, "the ASGI server to answer /healthz")
        consumer.wait_log(f"assigned {topic}")
        old_epoch = topic_epoch(topic)
        readers.append(live := open_stream(base, alice))
        produce(topic, [progress(alice, task, 10 * n, f"old {n}") for n in range(4)])
        live.wait_for(lambda r: messages(r) == [f"old {n}" for n in range(4)], 30)
        old_cursor = live.of_type("task.")[-1].id
        assert old_cursor is not None and old_cursor.endswith(f":3@{old_epoch}")

        new_epoch = recreate(topic, old_epoch)
        # The new topic's records take offsets 0-2 again, in the same partition (same key).
        new = [progress(alice, task, 50 + n, f"new {n}") for n in range(3)]
        if noticed_by == "offsets going back":
            produce(topic, new)
        # The running consume_events notices, stops and exits with an error, for its
        # supervisor to start it again (here: the test), having applied none of them.
        wait_until(lambda: consumer.popen is not None and consumer.popen.poll() is not None, 30)
        assert consumer.popen is not None and consumer.popen.returncode != 0
        assert "was re-created" in consumer.log()
        assert TaskEventLog.objects.filter(task=task).count() == 4
        consumer.start()
        consumer.wait_log(f"assigned {topic}")
        if noticed_by == "the periodic check":
            produce(topic, new)
        wait_until(lambda: AsyncTask.objects.get(pk=task.pk).progress == 52, 30, "the task applied")
        logged = TaskEventLog.objects.filter(task=task).values_list("offset", "epoch")
        assert sorted(logged) == sorted(
            [*((n, old_epoch) for n in range(4)), *((n, new_epoch) for n in range(3))]
        )
        assert not [m for m in read_all(conf.get().TOPIC_DLQ, conf.get().require_kafka())
                    if str(task.id).encode() in m.value()]  # fmt: skip

        # The stream that was open sees an event of another epoch: it is closed, and its
        # client resumes from its old cursor with a reset, then the new topic's events only.
        live.wait_for(lambda r: r.ended, 30)
        assert "new 0" not in messages(live)
        readers.append(resumed := open_stream(base, alice, old_cursor))
        resumed.wait_for(lambda r: messages(r) == ["new 0", "new 1", "new 2"], 30)
        (reset,) = resumed.of_type("stream-reset")
        assert json.loads(reset.data)["reason"] == "epoch-changed"
        assert resumed.of_type("task.")[-1].id == f"{_source(old_cursor)}:2@{new_epoch}"

        # A stream opened without a cursor starts at the user's newest event of the new
        # topic, not at the old topic's higher offsets: the next event reaches it.
        readers.append(fresh := open_stream(base, alice))
        produce(topic, [progress(alice, task, 60, "new 3")])
        fresh.wait_for(lambda r: messages(r) == ["new 3"], 30)
    finally:
        for reader in readers:
            reader.close()
        consumer.stop()
        server.stop()


def _source(cursor: str) -> str:
    """``task.events…:{partition}`` of a cursor ``{source}:{partition}:{offset}@{epoch}``."""
    return cursor.rsplit(":", 1)[0]


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
