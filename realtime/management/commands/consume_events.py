"""Run the Kafka → SSE consumer (see realtime/ingest.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from prometheus_client import start_http_server

from realtime.ingest import run_consumer
from streaming import conf, tracing
from streaming.kafka import ensure_project_topics


class Command(BaseCommand):
    help = "Consume task events from Kafka, update tasks and push events to users' streams."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--metrics-port", type=int, default=0, help="serve /metrics here")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["metrics_port"]:
            start_http_server(options["metrics_port"], addr="127.0.0.1")
        tracing.setup("taskstream-consumer", conf.get().OTEL_ENDPOINT)
        ensure_project_topics()
        asyncio.run(run_consumer())
