"""Dead-letter redrive: list the records of the dead-letter topic and re-publish chosen ones
to the events topic (``manage.py redrive_dead_letters``).

Every run reads the whole dead-letter topic (one ``RangeReader``, no consumer group) and
records each record in ``DeadLetter`` (the admin's counts per reason, and the ledger).
A chosen record is re-published with its key and value (after an optional fix-up merged
into the value), so its ``event_id`` stays: ``consume_events`` applies it once, and a copy
re-published again is a duplicate it neither applies nor delivers. The ledger
(``redriven_at``) also keeps a second run from re-publishing it at all, unless ``again``.

Before re-publishing, a record is checked as ``consume_events`` will check it (the adapter:
schema, JSON rules, key), and its task must now exist and belong to its user: a record
that would only be dead-lettered again is skipped with the reason.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from streaming import conf, tracecontext
from streaming.adapter import InvalidRecord, adapt
from streaming.kafka import ProducerPort, RangeReader, producer_config
from tasks.models import AsyncTask, DeadLetter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Letter:
    """One dead-letter record and what its headers and value say."""

    partition: int
    offset: int
    dead_at: datetime
    reason: str
    source: str
    source_partition: int | None
    source_offset: int | None
    key: bytes | None
    value: bytes | None
    body: dict[str, Any] | None  # the value, when it is a JSON object
    # The original record's trace context, kept on redrive (streaming.tracecontext).
    traceparent: str | None = None

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def source_position(self) -> str:
        return f"{self.source}:{self.source_partition}:{self.source_offset}"

    def field(self, name: str) -> Any:
        return None if self.body is None else self.body.get(name)


@dataclass(frozen=True)
class Selection:
    reason: str | None = None  # a case-insensitive substring of the reason
    task: str | None = None
    user: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    positions: frozenset[str] = frozenset()  # "partition:offset" of the dead-letter topic
    again: bool = False  # also those redriven before

    def matches(self, letter: Letter, redriven: bool) -> bool:
        return (
            (self.again or not redriven)
            and (self.reason is None or self.reason.lower() in letter.reason.lower())
            and (self.task is None or str(letter.field("task_id")).lower() == self.task.lower())
            and (self.user is None or letter.field("user_id") == self.user)
            and (self.since is None or letter.dead_at >= self.since)
            and (self.until is None or letter.dead_at < self.until)
            and (not self.positions or letter.position in self.positions)
        )


@dataclass
class Outcome:
    letter: Letter
    action: str  # "redriven", "would redrive", "skipped"
    detail: str = ""


@dataclass
class DeadLetterRedrive:
    reader: RangeReader = field(default_factory=lambda: RangeReader("redrive"))
    producer: ProducerPort | None = None
    topic: str = field(default_factory=lambda: conf.get().TOPIC_DLQ)
    events_topic: str = field(default_factory=lambda: conf.get().TOPIC_EVENTS)

    def read(self) -> list[Letter]:
        """Every record of the dead-letter topic, recorded in ``DeadLetter``.

        A ledger row at a record's position that describes another record (another time,
        event or reason) is from the topic before it was deleted and created again, whose
        offsets started over: it is replaced, redrive count and all, so a new record never
        passes for one already redriven."""
        letters: list[Letter] = []
        for partition in self.reader.partitions(self.topic):
            low, high = self.reader.watermarks(self.topic, partition)
            letters += [_letter(m) for m in self.reader.read(self.topic, partition, low, high - 1)]
        rows = [_row(self.topic, letter) for letter in letters]
        with transaction.atomic():
            DeadLetter.objects.bulk_create(rows, ignore_conflicts=True)
            kept = {
                (row.dlq_partition, row.dlq_offset): row
                for row in DeadLetter.objects.filter(dlq_topic=self.topic).only(*_SAME)
            }
            stale = [
                kept[(row.dlq_partition, row.dlq_offset)]
                for row in rows
                if not _same(kept[(row.dlq_partition, row.dlq_offset)], row)
            ]
            if stale:
                fresh = {(row.dlq_partition, row.dlq_offset): row for row in rows}
                for old in stale:
                    new = fresh[(old.dlq_partition, old.dlq_offset)]
                    new.pk = old.pk
                    new.save(force_update=True)
                logger.warning(
                    "redrive: %d ledger row(s) of %s were an older topic's records at the "
                    "same positions (the topic was re-created); replaced",
                    len(stale),
                    self.topic,
                )
        return letters

    def redriven(self) -> set[str]:
        rows = DeadLetter.objects.filter(dlq_topic=self.topic, redriven_at__isnull=False)
        return {f"{p}:{o}" for p, o in rows.values_list("dlq_partition", "dlq_offset")}

    def select(self, letters: Iterable[Letter], selection: Selection) -> list[Letter]:
        done = self.redriven()
        return [x for x in letters if selection.matches(x, x.position in done)]

    def redrive(
        self, letters: list[Letter], fixup: dict[str, Any] | None = None, *, dry_run: bool = False
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        ready: list[tuple[Letter, bytes, bytes]] = []
        for letter in letters:
            fixed = _fixed(letter, fixup) if fixup else letter
            problem = _problem(fixed)
            if problem is not None:
                outcomes.append(Outcome(letter, "skipped", problem))
                continue
            assert fixed.value is not None and fixed.key is not None
            ready.append((letter, fixed.key, fixed.value))
            outcomes.append(Outcome(letter, "would redrive" if dry_run else "redriven"))
        if dry_run or not ready:
            return outcomes
        producer = self.producer or Producer(producer_config())
        for letter, key, value in ready:
            headers: list[tuple[str, str | bytes | None]] = [
                ("redriven-from", f"{self.topic}:{letter.position}")
            ]
            if letter.traceparent is not None:
                headers.append((tracecontext.HEADER, letter.traceparent))
            producer.produce(self.events_topic, key=key, value=value, headers=headers)
        remaining = producer.flush(30.0)
        if remaining:
            raise RuntimeError(f"{remaining} redriven record(s) not acknowledged; run it again")
        with transaction.atomic():
            for letter, _, _ in ready:
                DeadLetter.objects.filter(
                    dlq_topic=self.topic, dlq_partition=letter.partition, dlq_offset=letter.offset
                ).update(redriven_at=timezone.now(), redrive_count=F("redrive_count") + 1)
        return outcomes

    def close(self) -> None:
        self.reader.close()


def _letter(message: Any) -> Letter:
    raw_headers = message.headers() or []
    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in raw_headers}
    value = message.value()
    body: Any = None
    try:
        body = json.loads(value) if value else None
    except ValueError:
        body = None
    _, millis = message.timestamp()
    return Letter(
        partition=message.partition(),
        offset=message.offset(),
        dead_at=datetime.fromtimestamp(millis / 1000, UTC),
        reason=headers.get("reason", ""),
        source=headers.get("source", ""),
        source_partition=_int(headers.get("partition")),
        source_offset=_int(headers.get("offset")),
        key=message.key(),
        value=value,
        body=body if isinstance(body, dict) else None,
        traceparent=tracecontext.from_headers(raw_headers),
    )


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# What tells two dead-letter records at one position apart: the dead-letter topic's
# timestamp (milliseconds), the event and the reason.
_SAME = ("dlq_partition", "dlq_offset", "dead_at", "event_id", "reason")


def _same(a: DeadLetter, b: DeadLetter) -> bool:
    return (a.dead_at, a.event_id, a.reason) == (b.dead_at, b.event_id, b.reason)


def _row(topic: str, letter: Letter) -> DeadLetter:
    user_id = letter.field("user_id")
    return DeadLetter(
        dlq_topic=topic,
        dlq_partition=letter.partition,
        dlq_offset=letter.offset,
        dead_at=letter.dead_at,
        reason=letter.reason[:1000],
        source=letter.source[:249],
        source_partition=letter.source_partition,
        source_offset=letter.source_offset,
        event_type=str(letter.field("event_type") or "")[:64],
        event_id=str(letter.field("event_id") or "")[:64],
        task_id=str(letter.field("task_id") or "")[:64],
        user_id=user_id if type(user_id) is int and abs(user_id) < 2**63 else None,
    )


def _merge(base: Any, patch: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return patch
    merged = dict(base)
    for key, value in patch.items():
        merged[key] = _merge(base.get(key), value)
    return merged


def _fixed(letter: Letter, fixup: dict[str, Any]) -> Letter:
    """The letter with ``fixup`` merged into its value (objects merged key by key) and its
    key set to the (fixed) value's user id."""
    if letter.body is None:
        return letter
    body = _merge(letter.body, fixup)
    user_id = body.get("user_id")
    key = str(user_id).encode() if type(user_id) is int else letter.key
    return replace(letter, body=body, value=json.dumps(body).encode(), key=key)


@dataclass
class _Record:
    """A letter as a record at a made-up position, for the consumer's own adapter."""

    _key: bytes | None
    _value: bytes | None

    def topic(self) -> str:
        return "redrive"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> None:
        return None


def _problem(letter: Letter) -> str | None:
    """Why ``consume_events`` would dead-letter ``letter`` again, or None."""
    try:
        event = adapt(_Record(letter.key, letter.value))
    except InvalidRecord as exc:
        return f"still invalid: {exc.reason}"
    task = AsyncTask.objects.filter(id=uuid.UUID(event.task_id)).values("owner_id").first()
    if task is None:
        return f"task {event.task_id} still unknown"
    if task["owner_id"] != event.user_id:
        return f"task {event.task_id} belongs to another user"
    return None
