from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tasks.models import AsyncTask, OutboxMessage, TaskStatus
from tests.conftest import api_client

pytestmark = pytest.mark.django_db


def test_login_returns_access_and_refresh(alice: User) -> None:
    client = APIClient()
    response = client.post(
        "/api/v1/auth/token/", {"username": "alice", "password": "alice-password"}, format="json"
    )
    assert response.status_code == 200
    assert {"access", "refresh"} <= response.json().keys()
    refreshed = client.post(
        "/api/v1/auth/token/refresh/", {"refresh": response.json()["refresh"]}, format="json"
    )
    assert refreshed.status_code == 200
    assert "access" in refreshed.json()


def test_bad_login_is_401_json(alice: User) -> None:
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "alice", "password": "wrong"}, format="json"
    )
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "no_active_account"


def test_creating_a_task_enqueues_its_request_in_the_outbox(alice: User) -> None:
    response = api_client(alice).post(
        "/api/v1/tasks/", {"kind": "demo", "params": {"steps": 3}}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert body["kind"] == "demo"
    assert body["params"] == {"steps": 3}
    task = AsyncTask.objects.get(id=body["id"])
    assert task.owner == alice
    [row] = OutboxMessage.objects.all()
    assert row.key == body["id"]
    assert row.sent_at is None
    assert row.value["command"] == "task.requested"
    assert row.value["task_id"] == body["id"]
    assert row.value["user_id"] == alice.pk
    assert row.value["params"] == {"steps": 3}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "kind"),
        ({"kind": ""}, "kind"),
        ({"kind": "Not A Kind!"}, "kind"),
        ({"kind": "demo", "params": [1, 2]}, "params"),
        ({"kind": "demo", "params": "text"}, "params"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    alice: User, payload: dict[str, object], field: str
) -> None:
    response = api_client(alice).post("/api/v1/tasks/", payload, format="json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert field in response.json()
    assert not AsyncTask.objects.exists()
    assert not OutboxMessage.objects.exists()


def test_malformed_json_is_400_json(alice: User) -> None:
    response = api_client(alice).post(
        "/api/v1/tasks/", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_listing_shows_only_own_tasks_paginated(alice: User, bob: User) -> None:
    for _ in range(3):
        AsyncTask.objects.create(owner=alice, kind="demo")
    AsyncTask.objects.create(owner=bob, kind="demo")
    response = api_client(alice).get("/api/v1/tasks/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert len(body["results"]) == 3
    assert {"next", "previous"} <= body.keys()


def test_another_users_task_is_404(alice: User, bob: User) -> None:
    task = AsyncTask.objects.create(owner=bob, kind="demo")
    client = api_client(alice)
    assert client.get(f"/api/v1/tasks/{task.id}/").status_code == 404
    response = client.post(f"/api/v1/tasks/{task.id}/cancel/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert AsyncTask.objects.get(id=task.id).cancel_requested_at is None


def test_unknown_task_id_is_404(alice: User) -> None:
    assert api_client(alice).get(f"/api/v1/tasks/{uuid.uuid4()}/").status_code == 404


def test_cancel_records_the_request_once_and_enqueues_it(alice: User) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    client = api_client(alice)
    first = client.post(f"/api/v1/tasks/{task.id}/cancel/")
    second = client.post(f"/api/v1/tasks/{task.id}/cancel/")
    assert first.status_code == second.status_code == 202
    assert first.json()["cancel_requested_at"] is not None
    commands = [row.value["command"] for row in OutboxMessage.objects.all()]
    assert commands == ["task.cancel_requested"]


def test_cancelling_a_finished_task_is_409(alice: User) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo", status=TaskStatus.SUCCEEDED)
    response = api_client(alice).post(f"/api/v1/tasks/{task.id}/cancel/")
    assert response.status_code == 409
    assert response.json()["code"] == "task_finished"


def test_no_credentials_is_401_json() -> None:
    response = APIClient().get("/api/v1/tasks/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_unknown_api_path_is_json_404(alice: User) -> None:
    response = api_client(alice).get("/api/v1/nothing-here/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_the_api_is_throttled_with_a_json_429(alice: User, monkeypatch: Any) -> None:
    from django.core.cache import cache
    from rest_framework.throttling import UserRateThrottle

    cache.clear()
    # DRF copies the rates onto the class when it is first imported.
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "3/min", "anon": "60/min"})
    client = api_client(alice)
    statuses = [client.get("/api/v1/tasks/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = client.get("/api/v1/tasks/")
    assert response.json()["code"] == "throttled"
    assert int(response["Retry-After"]) > 0
    cache.clear()
