"""Trace context (#13, item 2), without services: the strict ``traceparent`` parser, and the
record header's way through the adapter, the envelope, the publisher SDK and the worker."""

from __future__ import annotations

import json
import uuid

import pytest

from streaming import tracecontext
from streaming.adapter import adapt
from streaming.publisher import Publisher
from tests.fakes import FakeMessage, FakeProducer, event_value, record
from tests.test_worker import command, emitted, make_worker, run_to_completion

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    "value",
    [
        VALID,
        VALID.encode(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",  # not sampled
    ],
)
def test_a_valid_traceparent_is_kept(value: str | bytes) -> None:
    parsed = tracecontext.parse(value)
    assert parsed is not None and parsed[3:] == (value if isinstance(value, str) else VALID)[3:]


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        VALID.upper(),  # hex must be lower-case
        VALID + "-",  # version 00 is exactly 55 characters
        VALID[:-1],
        " " + VALID,
        VALID.replace("-", "_"),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "ff" + VALID[2:],  # forbidden version
        "0g" + VALID[2:],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        b"\xff" * 55,
        "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        "01-" + VALID[3:] + "-" + "x" * 600,  # a later version, but absurdly long
    ],
)
def test_a_malformed_traceparent_is_ignored(value: str | bytes | None) -> None:
    assert tracecontext.parse(value) is None


def test_a_later_version_is_read_as_version_00() -> None:
    assert tracecontext.parse("01-" + VALID[3:] + "-what-comes-next") == VALID
    assert tracecontext.parse("01-" + VALID[3:]) == VALID


def test_generated_and_child_contexts_are_valid_and_related() -> None:
    root = tracecontext.generate()
    assert tracecontext.parse(root) == root
    assert root.endswith("-01")  # sampled: a backend downstream records what follows
    kid = tracecontext.child(root)
    assert tracecontext.parse(kid) == kid
    assert tracecontext.trace_id(kid) == tracecontext.trace_id(root)
    assert kid != root and kid.endswith(root[-3:])


def test_headers_give_the_one_valid_traceparent() -> None:
    assert tracecontext.from_headers(None) is None
    assert tracecontext.from_headers([("other", b"x")]) is None
    assert tracecontext.from_headers([("traceparent", VALID.encode())]) == VALID
    assert tracecontext.from_headers({"traceparent": VALID}) == VALID
    assert tracecontext.from_headers([("traceparent", b"nope")]) is None
    # Two are ambiguous: neither is trusted.
    twice = [("traceparent", VALID.encode()), ("traceparent", tracecontext.generate().encode())]
    assert tracecontext.from_headers(twice) is None


def _with_headers(message: FakeMessage, headers: list[tuple[str, bytes]] | None) -> FakeMessage:
    message._headers = headers
    return message


def test_the_adapter_takes_the_header_into_the_envelope() -> None:
    value = event_value(user_id=7, task_id=str(uuid.uuid4()))
    event = adapt(_with_headers(record(value, offset=3), [("traceparent", VALID.encode())]))
    assert event.traceparent == VALID
    assert event.envelope()["traceparent"] == VALID
    data = json.loads(event.sse_body().split("data: ", 1)[1])
    assert data["traceparent"] == VALID


def test_no_or_a_malformed_header_leaves_the_envelope_as_it_was() -> None:
    value = event_value(user_id=7, task_id=str(uuid.uuid4()))
    plain = adapt(record(value, offset=3))
    bad = adapt(_with_headers(record(value, offset=3), [("traceparent", b"00-bad")]))
    assert plain.traceparent is None and bad.traceparent is None
    assert "traceparent" not in plain.envelope()
    assert plain.sse_body() == bad.sse_body()


def test_a_traceparent_in_the_record_value_is_neither_trusted_nor_an_error() -> None:
    value = event_value(user_id=7, task_id=str(uuid.uuid4()), traceparent="not one at all")
    event = adapt(record(value, offset=3))
    assert event.traceparent is None
    assert "traceparent" not in event.envelope()


def _traceparents(producer: FakeProducer) -> list[str | None]:
    return [tracecontext.from_headers(item.get("headers")) for item in producer.produced]


def test_a_reporter_puts_one_trace_on_every_event_of_its_run() -> None:
    producer = FakeProducer()
    publisher = Publisher(producer=producer)
    task = str(uuid.uuid4())
    with publisher.reporter(task, 7, background=False) as report:
        report.started()
        report.progress(50)
        report.succeeded()
    with publisher.reporter(task, 7, background=False, traceparent=VALID) as report:
        report.started()
    with publisher.reporter(task, 7, background=False, traceparent="00-broken") as report:
        report.started()
    first_run, given, broken = _traceparents(producer)[2], *_traceparents(producer)[3:]
    assert _traceparents(producer)[:3] == [first_run] * 3 and first_run is not None
    assert given == VALID  # the caller's
    assert broken is not None and broken not in (VALID, first_run)  # a new one, no error


def test_a_plain_send_carries_only_a_valid_traceparent() -> None:
    producer = FakeProducer()
    publisher = Publisher(producer=producer)
    publisher.send("task.started", user_id=7, task_id=str(uuid.uuid4()))
    publisher.send("task.started", user_id=7, task_id=str(uuid.uuid4()), traceparent="x")
    publisher.send("task.started", user_id=7, task_id=str(uuid.uuid4()), traceparent=VALID)
    assert _traceparents(producer) == [None, None, VALID]


def test_the_demo_worker_traces_each_run_under_its_request() -> None:
    worker, consumer, producer, clock = make_worker()
    traced, untraced = str(uuid.uuid4()), str(uuid.uuid4())
    params = {"steps": 2, "step_ms": 100}
    request = command("task.requested", traced, 5, kind="demo", params=params)
    request._headers = [("traceparent", VALID.encode())]
    consumer.batches.append(
        [request, command("task.requested", untraced, 6, kind="demo", params=params)]
    )
    run_to_completion(worker, clock)
    assert len(emitted(producer)) == 8
    by_task: dict[str, set[str | None]] = {}
    for item, trace in zip(producer.produced, _traceparents(producer), strict=True):
        by_task.setdefault(json.loads(item["value"])["task_id"], set()).add(trace)
    (child,) = by_task[traced]
    (own,) = by_task[untraced]
    assert child is not None and child != VALID
    assert tracecontext.trace_id(child) == tracecontext.trace_id(VALID)  # a span of it
    assert own is not None and tracecontext.trace_id(own) != tracecontext.trace_id(VALID)
