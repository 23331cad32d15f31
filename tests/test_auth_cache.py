"""Verified stream tokens are remembered by their text, until they expire (realtime.auth)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from realtime import auth


def scope(token: str) -> dict[str, Any]:
    return {"headers": [(b"authorization", f"Bearer {token}".encode())]}


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(auth, "_verified", {})
    seen: list[str] = []
    real = auth._verify

    def counting(token: str) -> auth.StreamUser:
        seen.append(token)
        return real(token)

    monkeypatch.setattr(auth, "_verify", counting)
    return seen


def token(user_id: int) -> str:
    access = AccessToken()
    access["user_id"] = user_id
    return str(access)


def test_a_token_is_verified_once_then_remembered(verifications: list[str]) -> None:
    alice, bob = token(1), token(2)
    assert [auth.authenticate(scope(alice)).user_id for _ in range(3)] == [1, 1, 1]
    assert auth.authenticate(scope(bob)).user_id == 2
    assert verifications == [alice, bob]


def test_a_remembered_token_past_its_expiry_is_verified_afresh(
    verifications: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = token(1)
    user = auth.authenticate(scope(alice))
    monkeypatch.setattr(time, "time", lambda: user.expires_at + 1)
    auth.authenticate(scope(alice))  # PyJWT's own clock still says valid
    assert verifications == [alice, alice]


def test_a_refused_token_is_not_remembered(verifications: list[str]) -> None:
    forged = token(1)[:-2] + "xx"
    for _ in range(2):
        with pytest.raises(auth.AuthFailed):
            auth.authenticate(scope(forged))
    assert verifications == [forged, forged]
    assert forged not in auth._verified


def test_the_memory_is_bounded(verifications: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "VERIFIED_MAX", 3)
    for user_id in range(10):
        auth.authenticate(scope(token(user_id)))
    assert len(auth._verified) <= 3
