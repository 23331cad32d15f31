"""Replay task events from Kafka: print them as streams would, re-deliver them, or re-apply
them to task state. The logic is in realtime/replay_command.py; see docs/events.md,
"Replaying"."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.replay.events import EventReplay, Report
from realtime.replay.selection import ReplayError, Selection
from streaming import conf


def _time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"not an ISO-8601 time: {value!r}") from None


class Command(BaseCommand):
    help = (
        "Replay task events from the events topic: --dry-run prints them with the ids a "
        "stream would send; otherwise they are re-delivered to the user's connected streams "
        "(and, with --rebuild-state, re-applied to task state)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", type=int, help="the owner's user id (required to deliver)")
        parser.add_argument("--task", help="only this task's events (UUID)")
        parser.add_argument(
            "--from",
            dest="from_cursor",
            metavar="CURSOR",
            help="events after this stream cursor (what Last-Event-ID would carry)",
        )
        parser.add_argument("--partition", type=int, help="only this partition")
        parser.add_argument("--start-offset", type=int, help="first offset (inclusive)")
        parser.add_argument("--end-offset", type=int, help="last offset (inclusive)")
        parser.add_argument("--since", help="first record at or after this ISO-8601 time")
        parser.add_argument("--until", help="records before this ISO-8601 time")
        parser.add_argument("--source", help="the topic; only TASKSTREAM_TOPIC_EVENTS is allowed")
        parser.add_argument(
            "--dry-run", action="store_true", help="print the events; deliver nothing"
        )
        parser.add_argument("--format", choices=["sse", "jsonl"], default="sse")
        parser.add_argument(
            "--rebuild-state",
            action="store_true",
            help="also re-apply the events to task state (idempotent)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run: bool = options["dry_run"]
        if not dry_run and options["user"] is None:
            raise CommandError("--user is required to re-deliver (only --dry-run may omit it)")
        if dry_run and options["rebuild_state"]:
            raise CommandError("--rebuild-state writes task state: drop --dry-run to use it")
        if not dry_run and not conf.get().REDIS_URL:
            raise CommandError(
                "re-delivery needs REDIS_URL: the in-process channel layer reaches no server"
            )
        selection = Selection(
            user_id=options["user"],
            task_id=options["task"],
            from_cursor=options["from_cursor"],
            partition=options["partition"],
            start_offset=options["start_offset"],
            end_offset=options["end_offset"],
            since=None if options["since"] is None else _time(options["since"]),
            until=None if options["until"] is None else _time(options["until"]),
            source=options["source"],
        )
        try:
            conf.get().require_kafka()
            replay = EventReplay(selection)
            try:
                report = replay.select(for_delivery=not dry_run)
                if options["rebuild_state"]:
                    replay.rebuild(report)
                if dry_run:
                    self._print(report, options["format"])
                else:
                    replay.deliver(report)
            finally:
                replay.close()
        except ReplayError as exc:
            raise CommandError(str(exc)) from None
        except ImproperlyConfigured as exc:  # no KAFKA_BOOTSTRAP_SERVERS
            raise CommandError(str(exc)) from None
        self._summary(report, dry_run)

    def _print(self, report: Report, fmt: str) -> None:
        for item in report.items:
            if fmt == "jsonl":
                self.stdout.write(item.json_line())
            else:
                self.stdout.write(item.frame, ending="")

    def _summary(self, report: Report, dry_run: bool) -> None:
        ranges = ", ".join(str(r) for r in report.ranges) or "nothing after the cursor"
        skipped = ", ".join(f"{n} {why}" for why, n in report.skipped.items() if n)
        lines = [
            f"read {report.records} record(s) from {ranges}; "
            f"{len(report.items)} event(s) selected" + (f" (skipped: {skipped})" if skipped else "")
        ]
        if report.applied:
            applied = ", ".join(f"{n} {o}" for o, n in sorted(report.applied.items()))
            lines.append(f"rebuilt task state: {applied}")
        if not dry_run:
            lines.append(
                f"re-delivered {len(report.items)} event(s) in {report.layer_messages} layer "
                "message(s); streams write only positions they have not sent"
            )
        # The summary goes to stderr so stdout stays exactly the frames.
        for line in lines:
            self.stderr.write(line)
