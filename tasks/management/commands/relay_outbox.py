"""Run the outbox relay (see tasks/outbox.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from streaming.loop import StopFlag
from tasks.outbox import run_relay


class Command(BaseCommand):
    # No topic check at start: the relay must run while Kafka is down; that is its job.
    help = "Deliver pending outbox rows (task commands) to Kafka."

    def handle(self, *args: Any, **options: Any) -> None:
        run_relay(StopFlag("relay_outbox").install())
