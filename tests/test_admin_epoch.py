"""The admin never edits a task's Kafka position (#10): the epoch (and offsets) are shown
read-only, and a crafted POST cannot change them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tasks.models import POSITION_FIELDS, AsyncTask

pytestmark = pytest.mark.django_db


def test_the_task_change_form_shows_the_epoch_read_only_and_ignores_a_post(
    django_user_model: type[User], alice: User
) -> None:
    root = django_user_model.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(root)
    task = AsyncTask.objects.create(
        owner=alice, kind="demo", last_event_source="task.events", last_event_epoch="Epoch1"
    )
    url = f"/admin/tasks/asynctask/{task.pk}/change/"
    page = client.get(url).content.decode()
    assert "Epoch1" in page
    for field in POSITION_FIELDS:
        assert f'name="{field}"' not in page, field
    client.post(url, {"last_event_epoch": "Forged", "last_event_offset": "999"})
    task.refresh_from_db()
    assert task.last_event_epoch == "Epoch1"
    assert task.last_event_offset != 999
