"""ASGI entry point of peer D (``daphne des_asgi:application`` from this folder)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "des_settings")
application = get_asgi_application()
