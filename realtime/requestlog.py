"""The request id and the access line: what ties a request's log lines together.

Every HTTP request gets an id: the client's ``X-Request-ID`` when it is a sane short token
(a proxy's or a caller's id, so their logs and ours share it), else a new one. It is bound
to the logging context (``structlog.contextvars``) for every line the request causes, and
echoed in the response's ``X-Request-ID``, also on the event stream's.

Two layers, because the stream is not a Django view: ``RequestIdMiddleware`` wraps the
whole ASGI application (stream and Django), and ``AccessLogMiddleware``, first in Django's
``MIDDLEWARE``, writes one line per Django request with its status, duration and user (set
by ``tasks.authentication`` once the API has authenticated the request). The stream writes
its own open and close lines (``realtime.stream``). Neither logs headers, the query string
or a body: credentials travel in those.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import structlog
from django.http import HttpRequest, HttpResponse
from django.utils.functional import empty

REQUEST_ID_HEADER: Final = b"x-request-id"
_SANE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# Probes and scrapes: one line per hit would drown the rest, so only at debug level.
QUIET_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})

log = structlog.get_logger(__name__)


def request_id(offered: str | bytes | None) -> str:
    """The client's id if it is a short token of letters, digits and ``._:-``; else new."""
    if isinstance(offered, bytes):
        offered = offered.decode("latin-1")
    if offered is not None and _SANE.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """ASGI: bind the request id for the whole request, and echo it in the response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = next((v for k, v in scope.get("headers", ()) if k == REQUEST_ID_HEADER), None)
        rid = request_id(offered)
        # A fresh context per request: nothing of another request's binds leaks in.
        structlog.contextvars.clear_contextvars()
        # AccessLogMiddleware reads it from there too. Not added to a copy of the scope: the
        # copy lived as long as the response, an event stream's for hours (issue #9, M4).
        structlog.contextvars.bind_contextvars(request_id=rid)

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == REQUEST_ID_HEADER for k, _ in headers):
                    headers.append((REQUEST_ID_HEADER, rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.clear_contextvars()


class AccessLogMiddleware:
    """Django: one ``request`` line per request, with the request id in the response also
    when Django runs without ``RequestIdMiddleware`` (the test client, a WSGI server)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Bound by RequestIdMiddleware for the whole request (Django runs this in a copy of
        # that context); absent when Django runs without it.
        given = structlog.contextvars.get_contextvars().get("request_id")
        owner = not isinstance(given, str)
        rid = given if isinstance(given, str) else ""
        if owner:
            # No RequestIdMiddleware around: this request's context is ours to make and to
            # clear (a WSGI thread serves request after request in one context).
            rid = request_id(request.headers.get("X-Request-ID"))
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            return self._logged(request, rid)
        finally:
            if owner:
                structlog.contextvars.clear_contextvars()

    def _logged(self, request: HttpRequest, rid: str) -> HttpResponse:
        started = time.monotonic()
        response = self.get_response(request)
        response["X-Request-ID"] = rid
        # Only a user already resolved (by the API's authentication, or a session view that
        # used it): reading a lazy one here would cost a query for nothing.
        user = getattr(getattr(request, "user", None), "_wrapped", getattr(request, "user", None))
        user_id = None if user is None or user is empty else getattr(user, "pk", None)
        method = log.debug if request.path in QUIET_PATHS else log.info
        method(
            "request",
            method=request.method,
            path=request.path,
            status=response.status_code,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            **({"user_id": user_id} if user_id is not None else {}),
        )
        return response
