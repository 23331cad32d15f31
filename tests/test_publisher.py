"""The publisher SDK (streaming/publisher): records the consumer accepts, validation in the
worker, rate limiting with coalescing on a fake clock, delivery errors, no Django."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from streaming.adapter import adapt
from streaming.publisher import (
    DeliveryError,
    DeliveryFailure,
    InvalidEvent,
    Publisher,
    ReporterFinished,
    TaskReporter,
)
from tests.conftest import ROOT
from tests.fakes import FakeProducer, record

TASK = str(uuid.uuid4())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(interval: float = 0.2) -> tuple[TaskReporter, FakeProducer, Clock]:
    producer, clock = FakeProducer(), Clock()
    publisher = Publisher(producer=producer, topic="task.events")
    reporter = publisher.reporter(
        TASK, 7, progress_interval=interval, clock=clock, background=False
    )
    return reporter, producer, clock


def sent(producer: FakeProducer) -> list[tuple[str, dict[str, Any]]]:
    """(event type, data) of each produced record, read back through the real adapter."""
    out = []
    for offset, item in enumerate(producer.produced):
        assert item["topic"] == "task.events"
        event = adapt(record(json.loads(item["value"]), offset=offset, key=item["key"].encode()))
        out.append((event.event_type, event.data))
    return out


def test_records_are_keyed_by_owner_with_unique_ids_and_pass_the_adapter() -> None:
    reporter, producer, _ = make()
    reporter.started()
    reporter.progress(3, 4, message="three of four")
    reporter.succeeded({"rows": 4})
    assert sent(producer) == [
        ("task.started", {}),
        ("task.progress", {"progress": 75, "message": "three of four"}),
        ("task.succeeded", {"result": {"rows": 4}}),
    ]
    assert {item["key"] for item in producer.produced} == {"7"}
    ids = [json.loads(item["value"])["event_id"] for item in producer.produced]
    assert len(set(ids)) == 3


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (lambda r: r.progress(101), "not a percentage"),
        (lambda r: r.progress(5, 4), "between 0 and total"),
        (lambda r: r.progress(1, 0), "between 0 and total"),
        (lambda r: r.progress(True), "must be a number"),
        (lambda r: r.progress(1, 2, message=3), "message: Input should be a valid string"),
        (lambda r: r.progress(1, 2, message="a\x00b"), "NUL"),
        (lambda r: r.succeeded({"x": float("nan")}), "finite"),
        (lambda r: r.succeeded(object()), "result"),
        (lambda r: r.failed(""), None),  # an empty message is allowed (the type's name)
    ],
)
def test_a_bad_event_raises_in_the_worker_and_sends_nothing(call: Any, problem: str) -> None:
    reporter, producer, _ = make()
    if problem is None:
        call(reporter)
        assert [t for t, _ in sent(producer)] == ["task.failed"]
        return
    with pytest.raises(InvalidEvent, match=problem):
        call(reporter)
    assert producer.produced == []


def test_a_bad_owner_or_task_id_is_refused_before_kafka() -> None:
    producer = FakeProducer()
    publisher = Publisher(producer=producer)
    with pytest.raises(InvalidEvent, match="task_id"):
        publisher.reporter("not-a-uuid", 7).started()
    with pytest.raises(InvalidEvent, match="user_id"):
        publisher.reporter(TASK, 0).started()
    with pytest.raises(InvalidEvent, match="over the 1024-byte limit"):
        Publisher(producer=producer, max_event_bytes=1024).reporter(TASK, 7).succeeded("x" * 2000)
    assert producer.produced == []


def test_progress_is_rate_limited_per_task_and_the_last_one_is_always_sent() -> None:
    reporter, producer, clock = make(interval=0.2)
    reporter.progress(1, 100)  # the first goes out at once
    for done in range(2, 50):  # a burst within the interval: coalesced, newest kept
        clock.now += 0.001
        reporter.progress(done, 100)
    assert [d["progress"] for _, d in sent(producer)] == [1]
    assert reporter.send_due() is False  # not due yet
    clock.now = 100.2
    assert reporter.send_due() is True
    assert [d["progress"] for _, d in sent(producer)] == [1, 49]
    assert reporter.send_due() is False  # nothing pending any more
    clock.now += 0.05
    reporter.progress(60, 100)  # pending again
    reporter.progress(60, 100)  # the same value: still one pending
    reporter.succeeded()  # the pending progress goes out before the final event
    assert sent(producer)[-2:] == [
        ("task.progress", {"progress": 60, "message": ""}),
        ("task.succeeded", {"result": None}),
    ]
    with pytest.raises(ReporterFinished):
        reporter.progress(61, 100)


def test_another_task_has_its_own_rate_limit() -> None:
    reporter, producer, clock = make()
    other = reporter.publisher.reporter(
        str(uuid.uuid4()), 7, progress_interval=0.2, clock=clock, background=False
    )
    reporter.progress(10)
    other.progress(10)
    assert len(producer.produced) == 2


def test_close_sends_the_pending_progress() -> None:
    reporter, producer, clock = make()
    reporter.progress(10)
    clock.now += 0.01
    reporter.progress(20, message="almost")
    reporter.close()
    assert [d["progress"] for _, d in sent(producer)] == [10, 20]


def test_a_with_block_fails_the_task_with_the_exception_that_leaves_it() -> None:
    reporter, producer, _ = make()
    with pytest.raises(KeyError), reporter:
        reporter.started()
        raise KeyError("missing row")
    assert sent(producer)[-1] == ("task.failed", {"error": "'missing row'"})


def test_the_background_thread_sends_coalesced_progress_when_due() -> None:
    producer = FakeProducer()
    reporter = Publisher(producer=producer).reporter(TASK, 7, progress_interval=0.05)
    reporter.progress(1)
    reporter.progress(2)  # coalesced: no later call, so only the thread can send it

    from tests.sse import wait_until

    wait_until(lambda: len(producer.produced) == 2, 5, "the coalesced progress")
    assert [d["progress"] for _, d in sent(producer)] == [1, 2]


class RefusingProducer(FakeProducer):
    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        self.produced.append({"topic": topic, "value": value, "key": key})
        kwargs["on_delivery"]("MSG_SIZE_TOO_LARGE: refused", None)


def test_delivery_errors_reach_the_callback_the_counters_and_flush() -> None:
    seen: list[DeliveryFailure] = []
    publisher = Publisher(producer=RefusingProducer(), on_error=seen.append)
    event_id = publisher.send("task.started", user_id=7, task_id=TASK)
    assert [(f.event_id, f.event_type, f.error) for f in seen] == [
        (event_id, "task.started", "MSG_SIZE_TOO_LARGE: refused")
    ]
    assert (publisher.sent, publisher.delivered, publisher.failed) == (1, 0, 1)
    with pytest.raises(DeliveryError, match="1 event\\(s\\) refused") as raised:
        publisher.flush()
    assert raised.value.failures == seen
    publisher.flush()  # reported once


def test_unacknowledged_events_make_flush_raise() -> None:
    publisher = Publisher(producer=FakeProducer(unacked_on_flush=2))
    with pytest.raises(DeliveryError, match="2 not acknowledged"):
        publisher.flush(0.1)


def django_modules(code: str) -> list[str]:
    """The django modules loaded after ``code`` runs in a fresh interpreter (no settings)."""
    script = (
        f"{code}\nimport sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().replace("'", '"'))
    return loaded


def test_the_sdk_and_its_integrations_import_no_django() -> None:
    assert django_modules("import streaming.publisher, streaming.publisher.rq") == []
    # kombu (under Celery) itself imports django.utils.functional when Django is installed;
    # the Celery integration adds nothing to that.
    assert django_modules("import streaming.publisher.celery") == django_modules(
        "import celery.app.task"
    )


def test_each_process_gets_its_own_publisher(monkeypatch: pytest.MonkeyPatch) -> None:
    # librdkafka's threads do not survive fork(): a Celery child forked after the main
    # process made its publisher must not reuse it.
    from streaming.publisher import get_publisher, set_publisher

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    set_publisher(None)
    try:
        first = get_publisher()
        assert get_publisher() is first
        monkeypatch.setattr(os, "getpid", lambda: -1)  # as in a forked child
        assert get_publisher() is not first
    finally:
        set_publisher(None)
