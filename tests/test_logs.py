"""Structured logs (#13, item 1), without services: the formats, the redaction, the settings,
request ids and access lines, and what consume_events writes per batch and per record."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
import structlog
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from config import logs
from realtime import ingestlog
from realtime.requestlog import REQUEST_ID_HEADER, RequestIdMiddleware, request_id
from streaming import metrics
from tasks.models import AsyncTask, TaskEventLog
from tests.conftest import ROOT, api_client
from tests.fakes import FakeConsumer, FakeProducer, event_value, record
from tests.logcapture import json_logs
from tests.test_consumer_loop import close_thread_connections, make_loop

__all__ = ["close_thread_connections"]  # the fixture, for the consumer test below

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_json_lines_carry_the_bound_context_for_structlog_and_stdlib_alike() -> None:
    with json_logs() as captured, structlog.contextvars.bound_contextvars(request_id="r-1"):
        structlog.get_logger("tests.logs").info("ours", task_id="t-1")
        logging.getLogger("django.request").warning("Not Found: %s", "/nowhere")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("uvicorn.error").exception("theirs failed")
    ours, django, uvicorn = captured.lines()
    assert list(ours)[:4] == ["timestamp", "level", "logger", "event"]
    assert ours["event"] == "ours" and ours["task_id"] == "t-1" and ours["level"] == "info"
    assert django["event"] == "Not Found: /nowhere" and django["logger"] == "django.request"
    assert uvicorn["level"] == "error" and "ValueError: boom" in uvicorn["exception"]
    assert {line["request_id"] for line in captured.lines()} == {"r-1"}


def test_the_console_format_is_for_people() -> None:
    record = logging.LogRecord("tests.logs", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    line = logs.formatter("console").format(record)
    assert "hello you" in line and "[tests.logs]" in line
    with pytest.raises(ValueError):
        json.loads(line)


def test_a_console_traceback_is_redacted_too() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjo3fQ.c2lnbmF0dXJl"
    try:
        raise ValueError(f"bad cookie {token}")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("tests.logs", logging.ERROR, __file__, 1, "failed", (), exc_info)
    line = logs.formatter("console").format(record)
    assert "ValueError: bad cookie" in line and "Traceback" in line
    assert token not in line and logs.REDACTED in line


def test_credentials_are_redacted_by_name_and_jwts_anywhere() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjo3fQ.c2lnbmF0dXJl"
    with json_logs() as captured:
        structlog.get_logger("tests.logs").info(
            "login", password="hunter2", refresh_token="r", note=f"Bearer {token}", user_id=7
        )
        logging.getLogger("tests.logs").info("cookie was %s", token)
    text = captured.text()
    assert token not in text and "hunter2" not in text
    first, second = captured.lines()
    assert first["password"] == first["refresh_token"] == logs.REDACTED
    assert first["note"] == f"Bearer {logs.REDACTED}" and first["user_id"] == 7
    assert second["event"] == f"cookie was {logs.REDACTED}"


def _settings_env(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TASKSTREAM_"))}
    base.pop("LOG_LEVEL", None)
    code = "from django.conf import settings; print(settings.LOG_FORMAT)"
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", code],
        cwd=ROOT,
        env={**base, "DJANGO_SECRET_KEY": "k" * 50, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_format_defaults_to_json_in_production_and_console_under_debug() -> None:
    assert _settings_env().stdout.strip() == "json"
    assert _settings_env(DJANGO_DEBUG="true").stdout.strip() == "console"
    assert _settings_env(TASKSTREAM_LOG_FORMAT="CONSOLE").stdout.strip() == "console"


@pytest.mark.parametrize(
    ("name", "value"), [("TASKSTREAM_LOG_FORMAT", "xml"), ("LOG_LEVEL", "loud")]
)
def test_a_bad_log_setting_stops_the_process_naming_it(name: str, value: str) -> None:
    result = _settings_env(**{name: value})
    assert result.returncode != 0
    assert f"{name}={value!r}" in result.stderr


@pytest.mark.parametrize(
    ("offered", "kept"),
    [
        ("abc-123", True),
        ("4bf92f35:77b3.4da6_a3ce", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("has space", False),
        ('"quoted"', False),
        ("-leading-dash", False),
        ("", False),
        ("näive", False),
    ],
)
def test_a_request_id_is_the_clients_only_when_sane(offered: str, kept: bool) -> None:
    assert (request_id(offered) == offered) is kept
    assert request_id(offered.encode("utf-8")) != "" and len(request_id(None)) == 32


async def test_the_asgi_middleware_binds_and_echoes_the_request_id() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(structlog.contextvars.get_contextvars())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "headers": [(b"x-request-id", b"from-proxy-1")], "path": "/"}
    await RequestIdMiddleware(app)(scope, None, send)
    assert seen == {"request_id": "from-proxy-1"}
    assert (REQUEST_ID_HEADER, b"from-proxy-1") in sent[0]["headers"]
    assert structlog.contextvars.get_contextvars() == {}  # nothing leaks to the next request

    await RequestIdMiddleware(app)(
        {"type": "http", "headers": [(b"x-request-id", b"a b")]}, None, send
    )
    assert seen["request_id"] != "a b" and len(seen["request_id"]) == 32


@pytest.mark.django_db
def test_an_api_request_logs_one_access_line_with_its_user_and_task(alice: User) -> None:
    client = api_client(alice)
    with json_logs() as captured:
        created = client.post(
            "/api/v1/tasks/",
            {"kind": "demo", "params": {}},
            format="json",
            HTTP_X_REQUEST_ID="req-create-1",
        )
        fetched = client.get(f"/api/v1/tasks/{created.json()['id']}/")
        APIClient().get("/api/v1/tasks/")
    assert created.status_code == 201 and created["X-Request-ID"] == "req-create-1"
    assert fetched["X-Request-ID"] not in ("", "req-create-1")
    create, fetch, anonymous = captured.events("request")
    task_id = created.json()["id"]
    assert create["request_id"] == "req-create-1" and create["status"] == 201
    assert (create["user_id"], create["task_id"], create["method"]) == (alice.pk, task_id, "POST")
    assert fetch["task_id"] == task_id and fetch["request_id"] == fetched["X-Request-ID"]
    assert anonymous["status"] == 401 and "user_id" not in anonymous
    assert "task_id" not in anonymous  # nothing of the earlier requests leaks into it


@pytest.mark.django_db(transaction=True)
async def test_a_batch_logs_its_context_each_record_and_dead_letters_with_their_trace(
    alice: User,
) -> None:
    task = await database_sync_to_async(AsyncTask.objects.create)(owner=alice, kind="demo")
    good = record(event_value(user_id=alice.pk, task_id=str(task.id)), offset=40, partition=2)
    good._headers = [("traceparent", TRACE.encode())]
    poison = record(b"{broken", offset=41, partition=2, key=b"1")
    poison._headers = [("traceparent", TRACE.encode())]
    consumer = FakeConsumer(batches=[[good, poison]])
    with json_logs() as captured:
        await make_loop(consumer, FakeProducer()).run_once()
    (line,) = captured.events("record")
    assert (line["topic"], line["partition"], line["offset"]) == ("task.events", 2, 40)
    assert line["traceparent"] == TRACE and line["trace_id"] == TRACE[3:35]
    assert (line["task_id"], line["user_id"], line["outcome"]) == (
        str(task.id),
        alice.pk,
        "applied",
    )
    (dead,) = captured.events("dead-lettering")
    assert dead["offset"] == 41 and dead["traceparent"] == TRACE
    assert dead["reason"].startswith("not valid JSON")
    (batch,) = captured.events("batch")
    assert batch["outcome"] == "committed" and batch["dead_lettered"] == 1
    assert batch["outcomes"] == {"applied": 1}
    for each in (line, dead, batch):  # every line of the batch carries its context
        assert each["batch_size"] == 2 and each["positions"] == "task.events:2:40-41"
    logged = await database_sync_to_async(TaskEventLog.objects.get)(task=task)
    assert logged.traceparent == TRACE


@pytest.mark.django_db(transaction=True)
async def test_per_record_lines_are_off_by_default(alice: User) -> None:
    task = await database_sync_to_async(AsyncTask.objects.create)(owner=alice, kind="demo")
    value = event_value(user_id=alice.pk, task_id=str(task.id), event_id=str(uuid.uuid4()))
    consumer = FakeConsumer(batches=[[record(value, offset=1)]])
    with json_logs(records=False) as captured:
        await make_loop(consumer, FakeProducer()).run_once()
    assert captured.events("record") == []
    assert len(captured.events("batch")) == 1


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("unknown user", "unknown-user"),
        ("unknown task", "unknown-task"),
        ("task belongs to another user", "wrong-owner"),
        ("position used by another event", "position-reused"),
        ("database refused it: DataError: value too long", "database-refused"),
        ("adapter error: KeyError: 'x'", "adapter-error"),
        ("record has no key (it must be the user id, 7)", "key"),
        ("key '7' does not match user_id 8", "key"),
        ("value is 300000 bytes, over the 262144-byte limit", "too-large"),
        ("value is not a JSON object", "contract"),
        ("event_type: unknown event type task.exploded", "contract"),
        ("not valid JSON: unexpected character", "contract"),
        ("data.message: a string contains a NUL character", "contract"),
    ],
)
def test_dead_letter_reasons_fall_into_a_few_classes(reason: str, kind: str) -> None:
    assert ingestlog.reason_class(reason) == kind


@pytest.mark.django_db(transaction=True)
async def test_dead_letters_are_counted_by_class_once_their_batch_commits(alice: User) -> None:
    metric = metrics.CONSUMER_DEAD_LETTERS
    before = {k: metric.labels(k)._value.get() for k in ("contract", "unknown-user")}
    ghost = event_value(user_id=987654, task_id=str(uuid.uuid4()))
    batch = [record(b"{broken", offset=1, key=b"1"), record(ghost, offset=2)]
    retried = make_loop(FakeConsumer(batches=[batch]), FakeProducer(unacked_on_flush=1))
    assert (await retried.run_once()).retried
    assert {k: metric.labels(k)._value.get() for k in before} == before  # not yet
    await make_loop(FakeConsumer(batches=[batch]), FakeProducer()).run_once()
    assert {k: metric.labels(k)._value.get() - v for k, v in before.items()} == {
        "contract": 1,
        "unknown-user": 1,
    }


@pytest.mark.django_db(transaction=True)
async def test_a_django_request_behind_the_asgi_middleware_logs_the_id_it_echoes() -> None:
    """The access line takes the id RequestIdMiddleware bound (not a new one of its own),
    and the response carries it once. An id the middleware replaces: the access line
    would make another."""
    from channels.testing import HttpCommunicator
    from django.core.asgi import get_asgi_application

    django_app = get_asgi_application()
    bound: list[str] = []

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        bound.append(structlog.contextvars.get_contextvars()["request_id"])
        await django_app(scope, receive, send)

    app = RequestIdMiddleware(recording)
    with json_logs() as captured:
        response = await HttpCommunicator(
            app,
            "GET",
            "/api/v1/tasks/",
            headers=[(b"host", b"testserver"), (b"x-request-id", b"not sane")],
        ).get_response(timeout=10)
    (line,) = captured.events("request")
    echoed = [v for k, v in response["headers"] if k.lower() == REQUEST_ID_HEADER]
    assert [line["request_id"]] == bound and line["status"] == 401
    assert echoed == [bound[0].encode()]
