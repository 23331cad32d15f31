"""Delete history nothing can need any more (see tasks/retention.py)."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import InterfaceError, OperationalError
from prometheus_client import start_http_server

from streaming.loop import StopFlag, recycle_db_connection
from tasks.retention import HistoryPruner, KafkaHoldings, Pruned

logger = logging.getLogger("tasks.retention")


class Command(BaseCommand):
    help = (
        "Delete event-log, dead-letter and outbox rows older than TASKSTREAM_HISTORY_DAYS "
        "that no replay, redrive or relay can need (Kafka no longer holds their records)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--every",
            type=float,
            default=0.0,
            help="run a pass every this many seconds until stopped (default: one pass)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="count what one pass would delete, and delete nothing",
        )
        parser.add_argument("--metrics-port", type=int, default=0, help="serve /metrics here")

    def handle(self, *args: Any, **options: Any) -> None:
        every: float = options["every"]
        if not every >= 0 or every == float("inf"):  # also NaN
            raise CommandError(f"--every must be a finite number of seconds >= 0, not {every}")
        if options["metrics_port"]:
            start_http_server(options["metrics_port"], addr="127.0.0.1")
        if options["dry_run"] and every:
            raise CommandError("--dry-run is one pass: it cannot be combined with --every")
        holdings = KafkaHoldings()
        pruner = HistoryPruner(holdings, dry_run=options["dry_run"])
        try:
            if not every:
                pruned = pruner.run_once()
                self._report(pruned, pruner.dry_run)
                if pruned.skipped:
                    raise CommandError(
                        f"Kafka did not answer for {', '.join(pruned.skipped)}: their rows "
                        "were kept; run again once it does"
                    )
                return
            flag = StopFlag("prune_history").install()
            while not flag.stopped:
                try:
                    self._report(pruner.run_once())
                except (OperationalError, InterfaceError) as exc:
                    # PostgreSQL unreachable: what was deleted stays deleted (one statement
                    # per chunk); the next pass takes up the rest.
                    logger.warning(
                        "prune_history: PostgreSQL unreachable (%s); next pass in %.0f s",
                        exc,
                        every,
                    )
                recycle_db_connection()
                # A stop is noticed within a second of the signal.
                due = time.monotonic() + every
                while not flag.stopped and (left := due - time.monotonic()) > 0:
                    time.sleep(min(left, 1.0))
        finally:
            holdings.close()

    def _report(self, pruned: Pruned, dry_run: bool = False) -> None:
        self.stdout.write(
            f"{'would prune' if dry_run else 'pruned'} {pruned.log} event-log rows, "
            f"{pruned.dead_letters} dead letters, {pruned.outbox} outbox rows"
        )
