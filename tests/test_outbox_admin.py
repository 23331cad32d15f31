"""The outbox in the admin: failed rows, their error and a filter for them, read-only."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from tasks.models import OutboxMessage

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(django_user_model: type[User]) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", password="pw"))
    return client


def test_failed_rows_are_listed_with_their_error_and_can_be_filtered(
    admin_client_logged_in: Client,
) -> None:
    failed = OutboxMessage.objects.create(
        topic="task.requests",
        key="refused-row",
        value={},
        failed_at=timezone.now(),
        last_error="MSG_SIZE_TOO_LARGE: Broker: Message size too large",
    )
    OutboxMessage.objects.create(topic="task.requests", key="pending-row", value={})
    page = admin_client_logged_in.get("/admin/tasks/outboxmessage/?failed_at__isempty=0")
    assert page.status_code == 200
    text = page.content.decode()
    assert "refused-row" in text and "pending-row" not in text
    assert "MSG_SIZE_TOO_LARGE: Broker: Message size too large" in text
    assert "By failed at" in text  # the filter in the sidebar

    change = admin_client_logged_in.get(f"/admin/tasks/outboxmessage/{failed.pk}/change/")
    assert change.status_code == 200
    body = change.content.decode()
    assert "Message size too large" in body
    assert 'name="last_error"' not in body and 'name="failed_at' not in body  # read-only
