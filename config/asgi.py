"""ASGI entry point: the SSE stream is a Channels consumer, everything else is Django."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Django must be set up before importing anything that touches models or settings.
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from realtime.cors import CorsMiddleware  # noqa: E402
from realtime.stream import EventStreamConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": CorsMiddleware(
            URLRouter(
                [
                    path("api/v1/events/stream", EventStreamConsumer.as_asgi()),
                    # django-stubs types re_path for views only; URLRouter takes ASGI apps.
                    re_path(r"", django_application),  # type: ignore[arg-type]
                ]
            )
        ),
    }
)
