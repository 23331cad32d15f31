"""Run the demo worker (see tasks/worker.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from streaming.kafka import ensure_project_topics
from streaming.loop import StopFlag
from tasks.worker import run_worker


class Command(BaseCommand):
    help = "Run the demo worker: execute task.requests, publish task.events."

    def handle(self, *args: Any, **options: Any) -> None:
        ensure_project_topics()
        run_worker(StopFlag("run_worker").install())
