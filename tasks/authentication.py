"""The API's JWT authentication, binding the user to the request's log lines."""

from __future__ import annotations

from typing import Any

import structlog
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication


class LoggedJWTAuthentication(JWTAuthentication):
    """simplejwt's ``JWTAuthentication``; once it has found the user, every log line of
    the request carries ``user_id`` (never the token: docs/operations.md)."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        result = super().authenticate(request)
        if result is not None:
            structlog.contextvars.bind_contextvars(user_id=result[0].pk)
        return result
