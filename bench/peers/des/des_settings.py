"""Peer D: django-eventstream from PyPI, configured per its README for multi-process use.

README "Multiple instances and scaling": set ``EVENTSTREAM_REDIS`` so ``send_event`` from any
process reaches every server process (one Redis pub/sub listener per process, channel
``events_channel``, in-process fan-out with ``MAX_PENDING = 10`` per listener). Served by
daphne as its README's "Deploying" section says. No storage class (the default): no replay.
The default channel manager lets anyone read any channel, so D does no token check.
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("BENCH_JWT_KEY", "bench-only")
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_eventstream",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "des_urls"
ASGI_APPLICATION = "des_asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
EVENTSTREAM_REDIS = {
    "host": os.environ.get("BENCH_REDIS_HOST", "127.0.0.1"),
    "port": int(os.environ.get("BENCH_REDIS_PORT", "6380")),
    "db": 0,
}
LOGGING = {"version": 1, "root": {"level": "WARNING"}}
