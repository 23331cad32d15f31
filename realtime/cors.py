"""CORS for the API and the stream, as ASGI middleware around the whole application.

Only origins listed in TASKSTREAM_CORS_ALLOWED_ORIGINS get CORS headers, always with
credentials (EventSource `withCredentials`) and never `*`. The preflight allows
`Last-Event-ID`: our ids contain `:`, which the Fetch standard's proposed safelist for that
header excludes, so browsers may preflight a reconnect (whatwg/fetch#568).
"""

from __future__ import annotations

from typing import Any

from streaming import conf

ALLOW_HEADERS = b"authorization, content-type, last-event-id, x-request-id"
ALLOW_METHODS = b"GET, POST, DELETE, OPTIONS"
EXPOSE_HEADERS = b"taskstream-resumed-from, retry-after, x-request-id"


class CorsMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        origin = headers.get(b"origin")
        if origin is None or origin.decode("latin-1") not in conf.get().CORS_ALLOWED_ORIGINS:
            await self.app(scope, receive, send)
            return
        cors = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
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
            return

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

        await self.app(scope, receive, send_with_cors)
