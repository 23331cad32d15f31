"""Run the Kafka → SSE consumer (see realtime/ingest.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from prometheus_client import start_http_server

from realtime.consumer_process import run_consumer
from realtime.epoch_watch import TopicRecreated
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
        try:
            asyncio.run(run_consumer())
        except TopicRecreated as exc:
            # A non-zero exit: the supervisor (systemd's Restart=always) starts it again.
            raise CommandError(str(exc)) from None
