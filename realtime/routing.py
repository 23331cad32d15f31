"""The ASGI application: the SSE stream is a Channels consumer, everything else is Django.

One path serves both stream scopes; ``?scope=staff`` picks the staff consumer
(``realtime.staff``), anything else the user one (which refuses a scope it does not know).

Built by a function, not at import, because Django must be set up first (``config/asgi.py``
does that for external servers; ``manage.py serve`` and ``run_embedded`` already run inside
a set-up Django).
"""

from __future__ import annotations

from typing import Any

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path, re_path

from realtime.cors import CorsMiddleware
from realtime.lifespan import lifespan_application
from realtime.request import STAFF_SCOPE, requested_scope
from realtime.requestlog import RequestIdMiddleware
from realtime.staff import StaffStreamConsumer
from realtime.stream import EventStreamConsumer

STREAM_PATH = "api/v1/events/stream"


def stream_application() -> Any:
    """The stream's ASGI app: the consumer of the requested scope."""
    user, staff = EventStreamConsumer.as_asgi(), StaffStreamConsumer.as_asgi()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        chosen = staff if requested_scope(scope) == STAFF_SCOPE else user
        await chosen(scope, receive, send)

    return app


def build_application() -> ProtocolTypeRouter:
    django_application = get_asgi_application()
    return ProtocolTypeRouter(
        {
            "http": RequestIdMiddleware(
                CorsMiddleware(
                    URLRouter(
                        [
                            path(STREAM_PATH, stream_application()),
                            # django-stubs types re_path for views only; URLRouter takes
                            # ASGI apps.
                            re_path(r"", django_application),  # type: ignore[arg-type]
                        ]
                    )
                )
            ),
            "lifespan": lifespan_application,
        }
    )
