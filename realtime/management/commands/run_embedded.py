"""`make run`: the whole product in one process (see realtime/embedded.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from realtime import embedded
from streaming import conf, tracing


class Command(BaseCommand):
    help = "Run server, worker, outbox relay and consumer in one process, no services needed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: Any, **options: Any) -> None:
        tracing.setup("taskstream", conf.get().OTEL_ENDPOINT)
        embedded.run(options["host"], options["port"])
