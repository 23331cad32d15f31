"""CORS for the API and the stream, as ASGI middleware around the whole application.

Only origins listed in TASKSTREAM_CORS_ALLOWED_ORIGINS get CORS headers, always with
credentials (EventSource `withCredentials`) and never `*`. The preflight allows
`Last-Event-ID`: our ids contain `:`, which the Fetch standard's proposed safelist for that
header excludes, so browsers may preflight a reconnect (whatwg/fetch#568).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from streaming import conf

ALLOW_HEADERS = b"authorization, content-type, last-event-id, x-request-id"
ALLOW_METHODS = b"GET, POST, DELETE, OPTIONS"
EXPOSE_HEADERS = b"taskstream-resumed-from, retry-after, x-request-id"


class CorsMiddleware:
    """A plain callable that returns the inner app's coroutine (or the preflight's): no frame
    of its own stays suspended for a response's life, an event stream's for hours (a
    coroutine per idle stream, issue #9, M4). Its caller awaits what it returns."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        inner: Awaitable[None]
        if scope["type"] != "http":
            inner = self.app(scope, receive, send)
            return inner
        origin = _header(scope, b"origin")
        if origin is None or origin.decode("latin-1") not in conf.get().CORS_ALLOWED_ORIGINS:
            inner = self.app(scope, receive, send)
            return inner
        cors = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]
        preflight = _header(scope, b"access-control-request-method") is not None
        if scope["method"] == "OPTIONS" and preflight:
            return _preflight(send, cors)

        async def send_with_cors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", []),
                        *cors,
                        (b"access-control-expose-headers", EXPOSE_HEADERS),
                    ],
                }
            await send(message)

        inner = self.app(scope, receive, send_with_cors)
        return inner


async def _preflight(send: Any, cors: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [
                *cors,
                (b"access-control-allow-methods", ALLOW_METHODS),
                (b"access-control-allow-headers", ALLOW_HEADERS),
                (b"access-control-max-age", b"600"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    """The last value of header ``name``. Looked up, not gathered into a dict: this
    middleware's frame lasts as long as the response, an event stream's for hours, and
    kept that dict per stream (issue #9, M4)."""
    found = None
    for key, value in scope.get("headers", ()):
        if key == name:
            found = value
    return found
