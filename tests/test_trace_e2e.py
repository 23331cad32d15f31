"""Logs and trace context end to end (#13), against the real services and processes:
one ``traceparent`` from a produced record to the consumer's JSON log line, the event log
and the SSE event (live, replayed from the hot store and read back from Kafka alike); and a
whole user session whose logs hold no token, cookie or password."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User

from streaming import conf, tracecontext
from streaming.publisher import Publisher
from tasks.models import AsyncTask, TaskEventLog
from tests.conftest import Proc, Stack, open_stream, start_task
from tests.sse import SSEEvent, StreamReader, wait_until
from tests.test_replay_events import run_command

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a log, each one JSON object (fails on a line that is not)."""
    lines = []
    for line in text.splitlines():
        parsed = json.loads(line)
        assert isinstance(parsed, dict), line
        lines.append(parsed)
    return lines


def events_of(reader: StreamReader, event_id: str) -> list[SSEEvent]:
    return [e for e in reader.of_type("task.") if json.loads(e.data)["event_id"] == event_id]


def test_one_traceparent_from_the_record_to_the_log_the_event_log_and_the_browser(
    stack: Stack, alice: User, streams: list[StreamReader]
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    before = open_stream(stack, alice)
    streams.append(before)
    known = tracecontext.generate()
    publisher = Publisher(conf.get().require_kafka(), topic=conf.get().TOPIC_EVENTS)
    # An event before it (without trace context): its id is where a reconnect resumes.
    first = publisher.send("task.started", user_id=alice.pk, task_id=str(task.id))
    publisher.flush()
    before.wait_for(lambda r: bool(events_of(r, first)), 30)
    (untraced,) = events_of(before, first)
    assert "traceparent" not in json.loads(untraced.data)
    earlier = untraced.id
    assert earlier is not None
    event_id = publisher.send(
        "task.progress",
        user_id=alice.pk,
        task_id=str(task.id),
        data={"progress": 40, "message": "traced"},
        traceparent=known,
    )
    publisher.flush()

    # The browser: the event's data carries it.
    before.wait_for(lambda r: bool(events_of(r, event_id)), 30)
    (live,) = events_of(before, event_id)
    assert json.loads(live.data)["traceparent"] == known and live.id is not None
    offset = int(live.id.split("@")[0].rsplit(":", 1)[1])

    # The consumer's JSON log line about that record names it, at its position.
    def record_line() -> dict[str, Any] | None:
        for line in json_lines(stack.consumer.log()):
            if line.get("event") == "record" and line.get("event_id") == event_id:
                return line
        return None

    line = wait_until(record_line, 30, "the consumer's line about the record")
    assert line["traceparent"] == known and line["trace_id"] == tracecontext.trace_id(known)
    assert (line["offset"], line["task_id"], line["user_id"]) == (offset, str(task.id), alice.pk)
    assert line["outcome"] == "applied" and line["level"] == "info"
    assert line["logger"] == "realtime.ingest.records" and line["batch_size"] >= 1

    # The event log keeps it.
    assert TaskEventLog.objects.get(event_id=event_id).traceparent == known

    # A reconnect from before the event replays it from the hot store, byte for byte.
    again = open_stream(stack, alice, cursor=earlier)
    streams.append(again)
    again.wait_for(lambda r: bool(events_of(r, event_id)), 30)
    (replayed,) = events_of(again, event_id)
    assert (replayed.id, replayed.data) == (live.id, live.data)

    # Read back from Kafka (the path of a stream's Kafka replay, through the same
    # adapter): the same data again.
    args = ["--user", str(alice.pk), "--from", earlier, "--dry-run", "--format", "jsonl"]
    dry = run_command(stack, *args)
    frames = [json.loads(x) for x in dry.stdout.splitlines()]
    assert [f["data"] for f in frames if json.loads(f["data"])["event_id"] == event_id] == [
        live.data
    ]


def test_a_demo_task_run_carries_one_trace_of_its_own(
    stack: Stack, alice: User, streams: list[StreamReader]
) -> None:
    stream = open_stream(stack, alice)
    streams.append(stream)
    task_id = start_task(stack, alice, "demo", {"steps": 2, "step_ms": 20})

    def done(r: StreamReader) -> bool:
        return any(
            e.event == "task.succeeded" and json.loads(e.data)["task_id"] == task_id
            for e in r.of_type("task.")
        )

    stream.wait_for(done, 60)
    traces = {
        json.loads(e.data).get("traceparent")
        for e in stream.of_type("task.")
        if json.loads(e.data)["task_id"] == task_id
    }
    (trace,) = traces
    assert tracecontext.parse(trace) == trace


def _log_sizes(stack: Stack) -> dict[str, int]:
    return {proc.name: _size(proc.log_path) for proc in _procs(stack)}


def _procs(stack: Stack) -> list[Proc]:
    return [stack.server, stack.consumer, stack.worker, stack.relay]


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def test_a_whole_session_logs_no_token_cookie_or_password(
    stack: Stack, django_user_model: type[User], streams: list[StreamReader]
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    wrong = f"wrong-{uuid.uuid4().hex}"
    user = django_user_model.objects.create_user(f"carol-{uuid.uuid4().hex[:8]}")
    # A hash the server's (default) hashers read: the tests' MD5 is not among them. Few
    # iterations, since only the login is under test.
    pbkdf2 = PBKDF2PasswordHasher()
    user.password = pbkdf2.encode(password, pbkdf2.salt(), iterations=1000)
    user.save(update_fields=["password"])
    sizes = _log_sizes(stack)
    api = f"{stack.base}/api/v1"

    refused = httpx.post(f"{api}/auth/token/", json={"username": user.username, "password": wrong})
    assert refused.status_code == 401
    login = httpx.post(
        f"{api}/auth/token/",
        json={"username": user.username, "password": password},
        headers={"X-Request-ID": "login-req-1"},
    )
    assert login.status_code == 200 and login.headers["x-request-id"] == "login-req-1"
    access, refresh = login.json()["access"], login.json()["refresh"]
    bearer = {"Authorization": f"Bearer {access}"}
    refreshed = httpx.post(f"{api}/auth/token/refresh/", json={"refresh": refresh}).json()
    cookie = httpx.post(f"{api}/auth/cookie/", headers=bearer)
    assert cookie.status_code == 200
    cookie_value = cookie.cookies[conf.get().AUTH_COOKIE]

    by_header = StreamReader(f"{api}/events/stream", bearer).start()
    by_cookie = StreamReader(
        f"{api}/events/stream",
        {"Cookie": f"{conf.get().AUTH_COOKIE}={cookie_value}", "X-Request-ID": "stream-req-1"},
    ).start()
    streams += [by_header, by_cookie]
    for reader in (by_header, by_cookie):
        reader.wait_for(lambda r: any(e.event == "stream-open" for e in r.events), 20)
    demo = {"kind": "demo", "params": {"steps": 2, "step_ms": 20}}
    created = httpx.post(f"{api}/tasks/", json=demo, headers=bearer)
    assert created.status_code == 201
    task_id = created.json()["id"]
    for reader in (by_header, by_cookie):
        reader.wait_for(
            lambda r: any(
                e.event == "task.succeeded" and json.loads(e.data)["task_id"] == task_id
                for e in r.events
            ),
            60,
        )
    assert by_cookie.response_headers is not None
    assert by_cookie.response_headers["x-request-id"] == "stream-req-1"
    for reader in (by_header, by_cookie):
        reader.close()

    def new_lines(proc: Proc) -> str:
        return proc.log_path.read_bytes()[sizes[proc.name] :].decode("utf-8", "replace")

    def both_closed() -> bool:
        closed = [
            line
            for line in json_lines(new_lines(stack.server))
            if line["event"] == "stream closed" and line.get("user_id") == user.pk
        ]
        return len(closed) == 2

    wait_until(both_closed, 30, "both streams' close lines")
    server = json_lines(new_lines(stack.server))
    (opened,) = [
        x for x in server if x["event"] == "stream opened" and x["request_id"] == "stream-req-1"
    ]
    assert opened["user_id"] == user.pk and len(opened["stream_id"]) == 32
    access_lines = [x for x in server if x["event"] == "request"]
    (create,) = [x for x in access_lines if x["method"] == "POST" and x["status"] == 201]
    assert (create["user_id"], create["task_id"]) == (user.pk, task_id)
    assert any(x["request_id"] == "login-req-1" for x in access_lines)

    secrets = {
        "password": password,
        "wrong password": wrong,
        "access token": access,
        "refresh token": refresh,
        "refreshed access token": refreshed["access"],
        "cookie value": cookie_value,
        # A token's signature alone is enough to be a leak.
        "access token signature": access.rsplit(".", 1)[1],
    }
    for proc in _procs(stack):
        text = proc.log_path.read_text(errors="replace")
        json_lines(new_lines(proc))  # and every line of this session is one JSON object
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} is in the {proc.name} log"
        assert not re.search(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+", text), proc.name
