"""Password guessing (#10): rotating X-Forwarded-For does not reset the per-address
throttle, and one username gets at most TASKSTREAM_LOGIN_RATE attempts from anywhere."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

pytestmark = pytest.mark.django_db

TOKEN = "/api/v1/auth/token/"


@pytest.fixture(autouse=True)
def _fresh_throttles() -> None:
    cache.clear()


def guess(client: APIClient, username: str, n: int, forwarded_for: str = "") -> int:
    if forwarded_for:
        client.credentials(HTTP_X_FORWARDED_FOR=forwarded_for)
    body = {"username": username, "password": f"guess-{n}"}
    return client.post(TOKEN, body, format="json").status_code


def test_rotating_x_forwarded_for_does_not_escape_the_address_throttle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(
        SimpleRateThrottle.THROTTLE_RATES, "anon", "5/min"
    )  # a small per-address budget; usernames vary, so only the address counts
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "login", "1000/min")
    client = APIClient()
    codes = [guess(client, f"user{n}", n, f"198.51.100.{n}") for n in range(8)]
    assert codes[:5] == [401] * 5
    assert codes[5:] == [429] * 3


def test_one_username_gets_a_bounded_number_of_guesses_from_any_address(
    django_user_model: type[User], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Names of this test's own: the throttle's counts live in the shared cache for a
    # minute, and must not lock the other tests' alice out.
    victim = django_user_model.objects.create_user(f"victim-{uuid.uuid4().hex}", password="x")
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "anon", None)  # a botnet
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "login", "10/min")
    codes = [guess(APIClient(REMOTE_ADDR=f"203.0.113.{n}"), victim.username, n) for n in range(12)]
    assert codes == [401] * 10 + [429] * 2
    # Another user is not locked out by the attacker.
    assert guess(APIClient(REMOTE_ADDR="203.0.113.99"), f"other-{uuid.uuid4().hex}", 0) == 401
