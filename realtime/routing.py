"""The ASGI application: the SSE stream is a Channels consumer, everything else is Django.

Built by a function, not at import, because Django must be set up first (``config/asgi.py``
does that for external servers; ``manage.py serve`` and ``run_embedded`` already run inside
a set-up Django).
"""

from __future__ import annotations

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path, re_path

from realtime.cors import CorsMiddleware
from realtime.requestlog import RequestIdMiddleware
from realtime.stream import EventStreamConsumer

STREAM_PATH = "api/v1/events/stream"


def build_application() -> ProtocolTypeRouter:
    django_application = get_asgi_application()
    return ProtocolTypeRouter(
        {
            "http": RequestIdMiddleware(
                CorsMiddleware(
                    URLRouter(
                        [
                            path(STREAM_PATH, EventStreamConsumer.as_asgi()),
                            # django-stubs types re_path for views only; URLRouter takes
                            # ASGI apps.
                            re_path(r"", django_application),  # type: ignore[arg-type]
                        ]
                    )
                )
            ),
        }
    )
