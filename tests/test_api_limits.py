"""The API refuses what it cannot carry (#8, item 4): each hostile body is a 4xx JSON answer
naming the field or path, nothing is stored, and the next normal request still works."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test.client import Client
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from tasks.demo import MAX_STEP_MS, MAX_STEPS, MIN_STEP_MS
from tasks.models import AsyncTask, OutboxMessage
from tests.conftest import api_client

pytestmark = pytest.mark.django_db

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
