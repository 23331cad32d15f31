"""ASGI entry point for external servers (uvicorn, daphne): ``config.asgi:application``."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Django must be set up before importing anything that touches models or settings.
django.setup(set_prefix=False)

from realtime.routing import build_application  # noqa: E402

application = build_application()
