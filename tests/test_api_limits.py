"""The API refuses what it cannot carry (#8, item 4): each hostile body is a 4xx JSON answer
naming the field or path, nothing is stored, and the next normal request still works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test.client import Client
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from tasks.demo import MAX_STEP_MS, MAX_STEPS, MIN_STEP_MS
from tasks.models import AsyncTask, OutboxMessage
from tests.conftest import ROOT, api_client

pytestmark = pytest.mark.django_db

PARAMS_MAX_BYTES = 64 * 1024  # the documented default (README, "API")
GOOD_TASK = {"kind": "demo", "params": {"steps": 1, "step_ms": MIN_STEP_MS}}


@pytest.fixture(autouse=True)
def _no_throttling(monkeypatch: pytest.MonkeyPatch) -> None:
    # These tests send many anonymous requests; the throttle is tested in test_tasks_api.py.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": None, "user": None})


@pytest.fixture
def client(alice: User) -> Iterator[APIClient]:
    """Alice's client; a server error comes back as a 500 response, not an exception."""
    authed = api_client(alice)
    authed.raise_request_exception = False
    yield authed


def stranger() -> APIClient:
    """An anonymous client, a server error likewise a response."""
    anonymous = APIClient()
    anonymous.raise_request_exception = False
    return anonymous


def post(
    client: Client, path: str, body: str | bytes, content_type: str = "application/json"
) -> Any:
    return client.post(path, body, content_type=content_type)


def deep(levels: int, leaf: str = "1") -> str:
    return "[" * levels + leaf + "]" * levels


def assert_still_serves(client: APIClient) -> None:
    """Nothing the hostile request did stops the next one: a task, a login, a refresh."""
    created = client.post("/api/v1/tasks/", GOOD_TASK, format="json")
    assert created.status_code == 201, created.content
    login = APIClient().post(
        "/api/v1/auth/token/", {"username": "alice", "password": "alice-password"}, format="json"
    )
    assert login.status_code == 200, login.content
    refreshed = APIClient().post(
        "/api/v1/auth/token/refresh/", {"refresh": login.json()["refresh"]}, format="json"
    )
    assert refreshed.status_code == 200, refreshed.content


def assert_field_error(response: Any, field: str, *fragments: str) -> None:
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert field in body, body
    message = " ".join(body[field])
    for fragment in fragments:
        assert fragment in message, body


def assert_nothing_stored() -> None:
    assert not AsyncTask.objects.exists()
    assert not OutboxMessage.objects.exists()


# --- values PostgreSQL, the layer or a browser cannot hold: params, credentials -------


TASKS, TOKEN, REFRESH = "/api/v1/tasks/", "/api/v1/auth/token/", "/api/v1/auth/token/refresh/"


def task(params: str) -> str:
    return '{"kind": "demo", "params": ' + params + "}"


def login(username: str, password: str) -> str:
    return '{"username": ' + username + ', "password": ' + password + "}"


@pytest.mark.parametrize(
    ("path", "body", "field", "where", "problem"),
    [
        (TASKS, task('{"note": "a\\u0000b"}'), "params", "params.note", "NUL"),
        (TASKS, task('{"a\\u0000": 1}'), "params", "params", "NUL"),
        (TASKS, task('{"note": "\\ud800"}'), "params", "params.note", "surrogate"),
        (TASKS, task('{"\\udc00": 1}'), "params", "params", "surrogate"),
        (TASKS, task('{"list": [1, "\\udfff"]}'), "params", "params.list[1]", "surrogate"),
        (TASKS, task('{"x": NaN}'), "params", "params.x", "finite"),
        (TASKS, task('{"x": Infinity}'), "params", "params.x", "finite"),
        (TASKS, task('{"x": -Infinity}'), "params", "params.x", "finite"),
        (TASKS, task('{"x": 1e999}'), "params", "params.x", "finite"),
        (TASKS, task('{"x": ' + deep(40) + "}"), "params", "params.x[0]", "deeper than 32"),
        (TOKEN, login('"alice\\u0000"', '"pw"'), "username", "username", "NUL"),
        (TOKEN, login('"\\ud800"', '"pw"'), "username", "username", "surrogate"),
        (TOKEN, login('"alice"', '"pw\\u0000"'), "password", "password", "NUL"),
        (TOKEN, login('"alice"', '"\\udbff"'), "password", "password", "surrogate"),
        (TOKEN, login('"alice"', "NaN"), "password", "password", "finite"),
        (REFRESH, '{"refresh": "x\\ud800"}', "refresh", "refresh", "surrogate"),
    ],
)
def test_unsafe_values_are_400_naming_the_field_and_the_path(
    client: APIClient, path: str, body: str, field: str, where: str, problem: str
) -> None:
    # Before, on the task API: NUL and lone surrogates reached PostgreSQL (500); NaN and
    # Infinity were a parse_error naming nothing; 40 levels were stored (201). On the token
    # endpoints NaN was a parse_error naming nothing; NUL and surrogates were already 400
    # naming the field (DRF's CharField, "Null characters are not allowed."): no 500 was
    # reproduced there, so those cases guard it.
    response = post(client, path, body)
    assert_field_error(response, field, where, problem)
    assert_nothing_stored()
    assert_still_serves(client)


def test_params_at_the_size_limit_are_taken_and_one_byte_more_is_400(client: APIClient) -> None:
    envelope = len(json.dumps({"blob": ""}, separators=(",", ":")))
    at_limit = {"blob": "x" * (PARAMS_MAX_BYTES - envelope)}
    taken = client.post("/api/v1/tasks/", {"kind": "bulk", "params": at_limit}, format="json")
    assert taken.status_code == 201, taken.content[:200]
    over = {"blob": "x" * (PARAMS_MAX_BYTES - envelope + 1)}
    refused = client.post("/api/v1/tasks/", {"kind": "bulk", "params": over}, format="json")
    assert_field_error(refused, "params", f"at most {PARAMS_MAX_BYTES} bytes")
    assert AsyncTask.objects.count() == OutboxMessage.objects.count() == 1
    assert_still_serves(client)


def test_params_size_counts_utf8_bytes_not_characters(client: APIClient) -> None:
    # 30,000 "é" are 60,000 bytes: under the limit; 40,000 are 80,000 bytes: over it.
    under = client.post(
        "/api/v1/tasks/", {"kind": "bulk", "params": {"t": "é" * 30_000}}, format="json"
    )
    assert under.status_code == 201
    over = client.post(
        "/api/v1/tasks/", {"kind": "bulk", "params": {"t": "é" * 40_000}}, format="json"
    )
    assert_field_error(over, "params", "bytes")


def test_the_params_limit_is_the_setting(client: APIClient, settings: Any) -> None:
    settings.TASKS_PARAMS_MAX_BYTES = 100
    refused = client.post(
        "/api/v1/tasks/", {"kind": "bulk", "params": {"t": "x" * 100}}, format="json"
    )
    assert_field_error(refused, "params", "at most 100 bytes")


@pytest.mark.parametrize("value", ["64k", "1", "262145"])
def test_a_bad_params_limit_stops_the_process_naming_the_variable(value: str) -> None:
    env = {**os.environ, "TASKSTREAM_PARAMS_MAX_BYTES": value}
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "TASKSTREAM_PARAMS_MAX_BYTES" in started.stderr


# --- kind ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        '"demo\\u0000"',
        '"\\ud800"',
        json.dumps("d" * 65),
    ],
)
def test_bad_kind_is_400_naming_kind(client: APIClient, kind: str) -> None:
    # A guard, not a fix: these were already 400 naming `kind` (DRF's CharField refuses NUL
    # and surrogates; max_length 64). Now the parser names them first.
    response = post(client, "/api/v1/tasks/", '{"kind": ' + kind + ', "params": {}}')
    assert_field_error(response, "kind")
    assert_nothing_stored()
    assert_still_serves(client)


# --- the demo worker's limits, checked at the API --------------------------------------


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": MAX_STEPS + 1}, "steps"),
        ({"steps": "5"}, "steps"),
        ({"steps": 5.0}, "steps"),
        ({"steps": True}, "steps"),
        ({"step_ms": 0}, "step_ms"),
        ({"step_ms": MIN_STEP_MS - 1}, "step_ms"),
        ({"step_ms": MAX_STEP_MS + 1}, "step_ms"),
        ({"step_ms": None}, "step_ms"),
        ({"steps": 3, "fail_at": 0}, "fail_at"),
        ({"steps": 3, "fail_at": 4}, "fail_at"),
        ({"steps": 3, "fail_at": "2"}, "fail_at"),
    ],
)
def test_demo_params_outside_the_workers_limits_are_400(
    client: APIClient, params: dict[str, Any], problem: str
) -> None:
    # Before: 201, and the worker failed the task later (or ran 10,000 steps at 0 ms).
    response = client.post("/api/v1/tasks/", {"kind": "demo", "params": params}, format="json")
    assert_field_error(response, "params", problem)
    assert_nothing_stored()
    assert_still_serves(client)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"steps": 1, "step_ms": MIN_STEP_MS},
        {"steps": MAX_STEPS, "step_ms": MAX_STEP_MS, "fail_at": MAX_STEPS},
        {"steps": 2, "fail_at": None, "other": "ignored"},
    ],
)
def test_demo_params_inside_the_limits_are_taken(client: APIClient, params: dict[str, Any]) -> None:
    response = client.post("/api/v1/tasks/", {"kind": "demo", "params": params}, format="json")
    assert response.status_code == 201, response.content


def test_other_kinds_are_not_held_to_the_demo_limits(client: APIClient) -> None:
    response = client.post(
        "/api/v1/tasks/", {"kind": "report", "params": {"steps": 0, "step_ms": 0}}, format="json"
    )
    assert response.status_code == 201


# --- the token endpoints ---------------------------------------------------------------


def test_the_token_endpoint_takes_json_only(client: APIClient, alice: User) -> None:
    # Before: form bodies were parsed too; nothing the project ships sends them.
    anonymous = stranger()
    response = post(
        anonymous,
        "/api/v1/auth/token/",
        "username=alice&password=alice-password",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert_still_serves(client)


# --- every endpoint: bodies nested too deeply, invalid, or too large -------------------


def endpoints(alice: User) -> list[tuple[str, APIClient]]:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    authed = api_client(alice)
    authed.raise_request_exception = False
    anonymous = stranger()
    return [
        ("/api/v1/tasks/", authed),
        (f"/api/v1/tasks/{task.id}/cancel/", authed),
        ("/api/v1/auth/token/", anonymous),
        ("/api/v1/auth/token/refresh/", anonymous),
        ("/api/v1/auth/cookie/", authed),
    ]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (deep(40), "[0][0][0]"),  # the path of the value past 32 levels
        (deep(100_000), "depth"),  # past what the parser itself goes into
        ('{"a": ' + deep(100_000) + "}", "depth"),
        ("{not json", "JSON"),
        ('{"a": 1,}', "JSON"),
        ('{"a\\u0000": 1}', "NUL"),
    ],
)
def test_bad_bodies_are_400_on_every_endpoint(
    client: APIClient, alice: User, body: str, fragment: str
) -> None:
    # Before: 500 (RecursionError) on the tasks and token endpoints for 100,000 levels;
    # cancel and cookie never read their body (202/200, whatever was sent).
    for path, caller in endpoints(alice):
        response = post(caller, path, body)
        assert response.status_code == 400, (path, response.content[:300])
        assert response["Content-Type"] == "application/json"
        answer = response.json()
        assert answer["code"] == "parse_error", (path, answer)
        assert fragment in answer["detail"], (path, answer)
    assert AsyncTask.objects.get().cancel_requested_at is None
    assert not OutboxMessage.objects.exists()
    assert_still_serves(client)


def test_a_body_over_the_upload_limit_is_413_json_on_every_endpoint(
    client: APIClient, alice: User, settings: Any
) -> None:
    # Before: Django's HTML "Bad Request (400)" page, not JSON.
    huge = json.dumps(
        {"kind": "demo", "params": {"blob": "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE}}
    )
    for path, caller in endpoints(alice):
        response = post(caller, path, huge)
        assert response.status_code == 413, (path, response.content[:300])
        assert response.json()["code"] == "request_too_large", path
    assert AsyncTask.objects.get().cancel_requested_at is None
    assert_still_serves(client)


def test_an_anonymous_bad_body_on_the_task_api_is_401_unread(alice: User) -> None:
    anonymous = stranger()
    response = post(anonymous, "/api/v1/tasks/", deep(100_000))
    assert response.status_code == 401
