"""The ASGI application: the SSE stream is a Channels consumer, everything else is Django.

One path serves both stream scopes; ``?scope=staff`` picks the staff consumer
(``realtime.staff``), anything else the user one (which refuses a scope it does not know).

Built by a function, not at import, because Django must be set up first (``config/asgi.py``
does that for external servers; ``manage.py serve`` and ``run_embedded`` already run inside
a set-up Django).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from asgiref.sync import markcoroutinefunction
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import re_path

from realtime.cors import CorsMiddleware
from realtime.lifespan import lifespan_application
from realtime.request import STAFF_SCOPE, requested_scope
from realtime.requestlog import RequestIdMiddleware
from realtime.staff import StaffStreamConsumer
from realtime.stream import EventStreamConsumer

STREAM_PATH = "api/v1/events/stream"


def stream_application() -> Any:
    """The stream's ASGI app: a new consumer of the requested scope.

    A plain function that returns the consumer's coroutine (marked as a coroutine function,
    so servers and ``ProtocolTypeRouter`` take it as an ASGI 3 app): no frame of its own
    stays suspended for the stream's life, as ``as_asgi``'s wrapper and an ``async def``
    dispatcher each did (a coroutine per idle stream, scanned by every full garbage
    collection: issue #9, M4).
    """

    def app(scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        staff = requested_scope(scope) == STAFF_SCOPE
        chosen = StaffStreamConsumer if staff else EventStreamConsumer
        result: Awaitable[None] = chosen()(scope, receive, send)
        return result

    return markcoroutinefunction(app)


def http_application(stream: Any, rest: Any) -> Any:
    """``stream`` for the stream path, ``rest`` (Django's routes) for any other.

    The stream path is matched here, ahead of Channels' ``URLRouter``, which for a stream
    kept its coroutine and a copy of the scope (464 B) for the stream's life (issue #9, M4).
    Matched as ``URLRouter`` matches it: after ``root_path``, leading slashes ignored. Like
    ``stream_application``, a plain function returning the app's coroutine.
    """

    def app(scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        path: str = scope.get("path", "")
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        chosen = stream if path.lstrip("/") == STREAM_PATH else rest
        result: Awaitable[None] = chosen(scope, receive, send)
        return result

    return markcoroutinefunction(app)


def build_application() -> ProtocolTypeRouter:
    django_application = get_asgi_application()
    return ProtocolTypeRouter(
        {
            "http": RequestIdMiddleware(
                CorsMiddleware(
                    http_application(
                        stream_application(),
                        # django-stubs types re_path for views only; URLRouter takes ASGI
                        # apps.
                        URLRouter([re_path(r"", django_application)]),  # type: ignore[arg-type]
                    )
                )
            ),
            "lifespan": lifespan_application,
        }
    )
