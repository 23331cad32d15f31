"""Who is opening a stream: a JWT from the Authorization header or the HttpOnly cookie.

Browsers' EventSource cannot set headers, so ``POST /api/v1/auth/cookie/`` copies the
caller's short-lived access token into an HttpOnly cookie scoped to the stream path. The
long-lived refresh token never leaves the API, and no token is accepted in the URL.
Validation is stateless (signature, expiry, type): no database query per connection; a
token this process verified before is only checked for expiry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken

from streaming import conf


@dataclass(frozen=True, slots=True)
class StreamUser:
    user_id: int
    expires_at: float  # Unix time the token expires


class AuthFailed(Exception):
    def __init__(self, detail: str, code: str, *, invalid_token: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.invalid_token = invalid_token

    def www_authenticate(self) -> str:
        if self.invalid_token:
            return 'Bearer realm="taskstream", error="invalid_token"'
        return 'Bearer realm="taskstream"'


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def cookie(scope: dict[str, Any], name: str) -> str | None:
    """The value of the request's cookie ``name`` (None when absent, empty or unreadable)."""
    cookie_header = header(scope, b"cookie")
    if not cookie_header:
        return None
    try:
        cookies = SimpleCookie(cookie_header)
    except CookieError:
        return None
    morsel = cookies.get(name)
    return morsel.value if morsel is not None and morsel.value else None


def raw_token(scope: dict[str, Any]) -> str | None:
    authorization = header(scope, b"authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthFailed(
                "Authorization header must be 'Bearer <token>'", "bad_header", invalid_token=True
            )
        return token.strip()
    return cookie(scope, conf.get().AUTH_COOKIE)


# Tokens verified by this process, by their text. A reconnecting client presents the same
# token again (EventSource's cookie), and its verification was a tenth of a stream open's
# work (py-spy, issue #9). Only the time can make a verified token invalid: one past its
# expiry is verified afresh (and refused). Emptied when full, like a cache.
_verified: dict[str, StreamUser] = {}
VERIFIED_MAX = 10_000


def authenticate(scope: dict[str, Any]) -> StreamUser:
    token = raw_token(scope)
    if token is None:
        raise AuthFailed(
            "Authentication credentials were not provided.",
            "not_authenticated",
            invalid_token=False,
        )
    known = _verified.get(token)
    if known is not None and time.time() < known.expires_at:
        return known
    user = _verify(token)
    if len(_verified) >= VERIFIED_MAX:
        _verified.clear()
    _verified[token] = user
    return user


def _verify(token: str) -> StreamUser:
    """The token's user after the full check: signature, expiry, type (``AuthFailed``)."""
    try:
        access = AccessToken(token)  # type: ignore[arg-type]
    except TokenError as exc:
        raise AuthFailed(str(exc), "token_not_valid", invalid_token=True) from None
    user_id = access.get(jwt_settings.USER_ID_CLAIM)
    try:
        uid = int(user_id)
    except (TypeError, ValueError):
        raise AuthFailed("token has no user", "token_not_valid", invalid_token=True) from None
    return StreamUser(user_id=uid, expires_at=float(access["exp"]))
