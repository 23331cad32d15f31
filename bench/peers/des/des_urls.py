"""One channel per user, as django-eventstream's README shows with ``format-channels``."""

from __future__ import annotations

import django_eventstream
from django.urls import include, path

urlpatterns = [
    path(
        "events/u<uid>/",
        include(django_eventstream.urls),
        {"format-channels": ["user-{uid}"]},
    ),
]
