"""The live admin (#13): widgets and the timeline carry what the live script needs, the
actions cancel through tasks.services and open the owner's live view, and everything of a
task stays read-only. The browser side is tests/test_admin_browser.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from tasks import admin_live
from tasks.models import AsyncTask, OutboxMessage, TaskEventLog

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/tasks/asynctask/"


@pytest.fixture
def root(django_user_model: type[User]) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", password="pw"))
    return client


def staff_client(django_user_model: type[User], name: str, *codenames: str) -> Client:
    user = django_user_model.objects.create_user(name, password="pw", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def running_task(owner: User, progress: int = 40) -> AsyncTask:
    return AsyncTask.objects.create(
        owner=owner,
        kind="demo",
        status="running",
        progress=progress,
        message="step 2",
        last_event_source="task.events",
        last_event_partition=1,
        last_event_offset=17,
        last_event_epoch="Epoch1",
    )


def test_the_task_list_has_live_widgets_and_subscribes_to_the_staff_stream(
    root: Client, alice: User
) -> None:
    task = running_task(alice)
    text = root.get(CHANGELIST).content.decode()
    assert 'id="ts-live" data-stream="/api/v1/events/stream?scope=staff"' in text
    assert "taskstream/dist/admin-live.js" in text
    for field in ("status", "progress"):
        assert (
            f'data-ts-task="{task.id}" data-ts-field="{field}" data-status="running" '
            f'data-progress="40" data-message="step 2" data-position="task.events:1:17@Epoch1"'
        ) in text
    assert '<progress max="100" value="40">' in text
    assert f"/admin/tasks/asynctask/live/{alice.pk}/" in text


def test_the_task_page_shows_a_timeline_with_positions_and_follows_the_owner(
    root: Client, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = running_task(alice)
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    # Logged before epochs were recorded, then in the topic's epoch, then after the topic
    # was re-created (its offsets start again): shown in the order they were applied.
    for offset, epoch, kind in (
        (3, "", "task.started"),
        (17, "Epoch1", "task.progress"),
        (2, "Epoch2", "task.progress"),
    ):
        TaskEventLog.objects.create(
            traceparent=trace if offset == 17 else None,
            task=task,
            event_id=f"7d0b9a52-1c1e-4a57-8a0e-3c6f1f3f8a{offset:02d}",
            event_type=kind,
            source="task.events",
            partition=1,
            offset=offset,
            epoch=epoch,
            occurred_at="2026-01-01T00:00:00Z",
            data={"progress": offset},
        )
    url = f"{CHANGELIST}{task.id}/change/"
    text = root.get(url).content.decode()
    assert f'data-stream="/api/v1/events/stream?scope=staff&amp;user={alice.pk}"' in text
    assert f'data-ts-timeline="{task.id}"' in text
    rows = re.findall(r'<tr data-position="([^"]+)"><td>([a-z.]+)</td>', text)
    assert rows == [
        ("task.events:1:3", "task.started"),
        ("task.events:1:17@Epoch1", "task.progress"),
        ("task.events:1:2@Epoch2", "task.progress"),
    ]
    assert f"<td>{trace}</td></tr>" in text
    assert 'data-ts-col="trace"' in text  # the event log's traceparent, empty here
    # The trace column is optional: without one in the model, the timeline has none.
    monkeypatch.setattr(admin_live, "_trace_field", lambda: None)
    assert 'data-ts-col="trace"' not in root.get(url).content.decode()


def test_every_field_of_a_task_stays_read_only(root: Client, alice: User) -> None:
    task = running_task(alice)
    url = f"{CHANGELIST}{task.id}/change/"
    page = root.get(url).content.decode()
    form = page[page.index('id="asynctask_form"') :]
    assert not re.search(r"<(input|textarea|select)[^>]*name=\"(?!csrfmiddlewaretoken|_)", form)
    root.post(url, {"status": "succeeded", "progress": "100", "kind": "other"})
    task.refresh_from_db()
    assert (task.status, task.progress, task.kind) == ("running", 40, "demo")


def test_the_cancel_action_goes_through_the_service_and_skips_finished_tasks(
    root: Client, alice: User, bob: User
) -> None:
    running = running_task(alice)
    done = AsyncTask.objects.create(owner=bob, kind="demo", status="succeeded", progress=100)
    response = root.post(
        CHANGELIST,
        {"action": "cancel_selected", "_selected_action": [str(running.id), str(done.id)]},
        follow=True,
    )
    text = response.content.decode()
    assert "Cancel requested for 1 task(s)." in text
    assert "1 task(s) had already finished" in text
    running.refresh_from_db()
    done.refresh_from_db()
    assert running.cancel_requested_at is not None and done.cancel_requested_at is None
    commands = [m.value["command"] for m in OutboxMessage.objects.filter(key=str(running.id))]
    assert commands == ["task.cancel_requested"]
    assert not OutboxMessage.objects.filter(key=str(done.id)).exists()


def test_staff_who_may_only_view_tasks_get_no_cancel_action(
    django_user_model: type[User], alice: User
) -> None:
    task = running_task(alice)
    viewer = staff_client(django_user_model, "viewer", "view_asynctask")
    page = viewer.get(CHANGELIST).content.decode()
    assert 'value="open_live_view"' in page and 'value="cancel_selected"' not in page
    viewer.post(CHANGELIST, {"action": "cancel_selected", "_selected_action": [str(task.id)]})
    task.refresh_from_db()
    assert task.cancel_requested_at is None


def test_the_live_view_action_opens_one_owners_view(root: Client, alice: User, bob: User) -> None:
    a1, a2, b1 = running_task(alice), running_task(alice), running_task(bob)
    one = {"action": "open_live_view", "_selected_action": [str(a1.id), str(a2.id)]}
    response = root.post(CHANGELIST, one)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/tasks/asynctask/live/{alice.pk}/"
    two = {"action": "open_live_view", "_selected_action": [str(a1.id), str(b1.id)]}
    text = root.post(CHANGELIST, two, follow=True).content.decode()
    assert "Select tasks of one owner" in text


def test_the_live_view_lists_the_users_tasks_and_follows_their_stream(
    root: Client, alice: User, bob: User
) -> None:
    mine = running_task(alice, progress=70)
    theirs = running_task(bob)
    text = root.get(f"/admin/tasks/asynctask/live/{alice.pk}/").content.decode()
    assert f'data-stream="/api/v1/events/stream?scope=staff&amp;user={alice.pk}"' in text
    assert f'data-ts-rows="{alice.pk}"' in text and f'data-ts-row="{mine.id}"' in text
    assert '<progress max="100" value="70">' in text
    assert str(theirs.id) not in text
    assert root.get("/admin/tasks/asynctask/live/987654/").status_code == 404


@pytest.mark.parametrize(
    ("who", "status"), [("anonymous", 302), ("staff without task permissions", 403)]
)
def test_the_live_view_is_for_staff_who_may_view_tasks(
    django_user_model: type[User], alice: User, who: str, status: int
) -> None:
    client = Client() if who == "anonymous" else staff_client(django_user_model, "clerk")
    response: Any = client.get(f"/admin/tasks/asynctask/live/{alice.pk}/")
    assert response.status_code == status
    if status == 302:
        assert response["Location"].startswith("/admin/login/")
