"""List dead-letter records and re-publish chosen ones to the events topic. The logic is in
tasks/redrive.py; see docs/workers.md, "Dead letters"."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.timesince import timesince

from streaming.kafka import RangeError
from tasks.redrive import DeadLetterRedrive, Letter, Selection


def _time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"not an ISO-8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise CommandError(f"{value!r} has no time zone (add +00:00 or Z)")
    return parsed


class Command(BaseCommand):
    help = (
        "List the records of the dead-letter topic (reason, source position, age) and "
        "re-publish the chosen ones to the events topic with their event ids; --dry-run "
        "shows what would be re-published. A record redriven once is not redriven again "
        "unless --again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--list", action="store_true", help="only list; re-publish nothing")
        parser.add_argument("--reason", help="reason contains this text (case-insensitive)")
        parser.add_argument("--task", help="the record's task_id")
        parser.add_argument("--user", type=int, help="the record's user_id")
        parser.add_argument("--since", type=_time, help="dead-lettered at or after (ISO-8601)")
        parser.add_argument("--until", type=_time, help="dead-lettered before (ISO-8601)")
        parser.add_argument(
            "--position",
            action="append",
            default=[],
            metavar="PARTITION:OFFSET",
            help="exactly this dead-letter record (repeatable)",
        )
        parser.add_argument(
            "--fixup",
            metavar="JSON",
            help='a JSON object merged into each value first, e.g. \'{"data": {"progress": 50}}\'',
        )
        parser.add_argument("--again", action="store_true", help="include records redriven before")
        parser.add_argument("--dry-run", action="store_true", help="show; re-publish nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        fixup = None
        if options["fixup"]:
            try:
                fixup = json.loads(options["fixup"])
            except ValueError as exc:
                raise CommandError(f"--fixup is not JSON: {exc}") from None
            if not isinstance(fixup, dict):
                raise CommandError("--fixup must be a JSON object")
        selection = Selection(
            reason=options["reason"],
            task=options["task"],
            user=options["user"],
            since=options["since"],
            until=options["until"],
            positions=frozenset(options["position"]),
            again=options["again"] or options["list"],
        )
        redrive = DeadLetterRedrive()
        try:
            try:
                letters = redrive.read()
            except RangeError as exc:
                raise CommandError(str(exc)) from None
            chosen = redrive.select(letters, selection)
            if options["list"]:
                for letter in chosen:
                    self.stdout.write(_describe(letter))
                self.stderr.write(f"{len(chosen)} dead-letter record(s)")
                return
            outcomes = redrive.redrive(chosen, fixup, dry_run=options["dry_run"])
        finally:
            redrive.close()
        for outcome in outcomes:
            detail = f" ({outcome.detail})" if outcome.detail else ""
            self.stdout.write(f"{_describe(outcome.letter)}  -> {outcome.action}{detail}")
        counts: dict[str, int] = {}
        for outcome in outcomes:
            counts[outcome.action] = counts.get(outcome.action, 0) + 1
        summary = ", ".join(f"{n} {action}" for action, n in counts.items()) or "nothing chosen"
        self.stderr.write(summary)


def _describe(letter: Letter) -> str:
    age = timesince(letter.dead_at, timezone.now())
    return (
        f"dlq {letter.position}  {age} ago  from {letter.source_position}  "
        f"user={letter.field('user_id')} task={letter.field('task_id')} "
        f"type={letter.field('event_type')}  reason: {letter.reason}"
    )
