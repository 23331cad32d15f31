from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tasks.models import AsyncTask, TaskEventLog

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(django_user_model: type[User]) -> Client:
    admin = django_user_model.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(admin)
    return client


def test_the_task_list_shows_status_progress_owner_and_age(
    admin_client_logged_in: Client, alice: User
) -> None:
    AsyncTask.objects.create(owner=alice, kind="demo", status="running", progress=40)
    page = admin_client_logged_in.get("/admin/tasks/asynctask/?status__exact=running")
    assert page.status_code == 200
    text = page.content.decode()
    for expected in ("running", "40", "alice", "just now"):
        assert expected in text


def test_search_by_task_id_and_by_owner(
    admin_client_logged_in: Client, alice: User, bob: User
) -> None:
    mine = AsyncTask.objects.create(owner=alice, kind="demo")
    theirs = AsyncTask.objects.create(owner=bob, kind="demo")
    by_id = admin_client_logged_in.get(f"/admin/tasks/asynctask/?q={mine.id}").content.decode()
    assert str(mine.id) in by_id and str(theirs.id) not in by_id
    by_owner = admin_client_logged_in.get("/admin/tasks/asynctask/?q=bob").content.decode()
    assert str(theirs.id) in by_owner and str(mine.id) not in by_owner


def test_the_task_page_shows_its_event_history_read_only(
    admin_client_logged_in: Client, alice: User
) -> None:
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    TaskEventLog.objects.create(
        task=task,
        event_id="7d0b9a52-1c1e-4a57-8a0e-3c6f1f3f8a11",
        event_type="task.progress",
        source="task.events",
        partition=2,
        offset=1042,
        occurred_at="2026-01-01T00:00:00Z",
        data={"progress": 5},
    )
    page = admin_client_logged_in.get(f"/admin/tasks/asynctask/{task.id}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "task.progress" in text and "1042" in text
    assert 'name="events-0-offset"' not in text  # rendered read-only, not as an input
